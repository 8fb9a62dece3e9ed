"""IBSI radiomics of each case's ROI (the still and the CEUS keyframes), beside the deep features."""
