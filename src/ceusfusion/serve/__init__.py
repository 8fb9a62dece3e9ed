"""``ceusfusion serve``: a local web page that predicts for one patient with a bundle (docs/serve.md).

``app`` (the ASGI app and its JSON API), ``uploads`` (a request's files: streamed, limited, checked),
``preview`` (a still or frame to draw a box on), ``card`` (the model card), ``server`` (running it).
The page (``static/``) is server-rendered HTML with a small script that calls the API.
"""

from ceusfusion.serve.app import create_app
from ceusfusion.serve.server import running_server, serve

__all__ = ["create_app", "running_server", "serve"]
