"""The bundle's fusion model without pickle: ``skops`` audited against our allowlists, native arrays checked.

Why skops (and not ONNX or our own JSON): see :mod:`ceusfusion.deploy.export`. This module imports no torch, so
``ceusfusion predict`` can load the fusion model in a second process while the first imports torch
(:mod:`ceusfusion.deploy.fusion_worker`): scikit-learn and skops cost a second or more of import on a laptop.
"""

from __future__ import annotations

import io
import json
import sys
import zipfile
from pathlib import Path

import numpy as np

from ceusfusion.core.errors import CeusError
from ceusfusion.core.fsutil import write_bytes

MAX_MODEL_BYTES = 1 << 30  # a fusion model's unpacked size; a larger (zip-bomb) file is refused before reading
# Every type a fitted fusion pipeline of any family holds, as skops names it; nothing else is built.
TRUSTED_TYPES = frozenset({
    "builtins.dict", "builtins.list", "builtins.tuple", "builtins.slice", "builtins.str", "builtins.int",
    "builtins.float", "builtins.bool", "builtins.bytes", "builtins.bytearray",
    "collections.OrderedDict", "collections.defaultdict",
    "numpy.ndarray", "numpy.dtype", "numpy.float64", "numpy.float32", "numpy.int64", "numpy.int32",
    "numpy.int8", "numpy.uint8", "numpy.bool", "numpy.bool_", "numpy.str_", "numpy.random.mtrand.RandomState",
    "sklearn.pipeline.Pipeline", "sklearn.compose._column_transformer.ColumnTransformer",
    "sklearn.impute._base.SimpleImputer", "sklearn.preprocessing._encoders.OneHotEncoder",
    "sklearn.preprocessing._data.StandardScaler", "sklearn.preprocessing._function_transformer.FunctionTransformer",
    "sklearn.preprocessing._label.LabelEncoder", "sklearn.preprocessing._label.LabelBinarizer",
    "ceusfusion.fusion.lasso.LassoSelector", "ceusfusion.fusion.families.GroupedPlattSVC",
    "sklearn.linear_model._logistic.LogisticRegression", "sklearn.svm._classes.SVC",
    "sklearn.calibration.CalibratedClassifierCV", "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.neighbors._classification.KNeighborsClassifier", "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._ball_tree.BallTree", "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.ensemble._forest.RandomForestClassifier", "sklearn.ensemble._forest.ExtraTreesClassifier",
    "sklearn.tree._classes.DecisionTreeClassifier", "sklearn.tree._classes.ExtraTreeClassifier",
    "sklearn.tree._tree.Tree",
    "xgboost.sklearn.XGBClassifier", "xgboost.core.Booster", "lightgbm.sklearn.LGBMClassifier",
    "lightgbm.basic.Booster",
    "sklearn.neural_network._multilayer_perceptron.MLPClassifier",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
})
# skops node kinds that only rebuild data or an allowed type (no FunctionNode, MethodNode, ReduceNode, ...)
TRUSTED_LOADERS = frozenset({"DictNode", "DefaultDictNode", "ListNode", "TupleNode", "SetNode", "SliceNode",
                             "JsonNode", "BytesNode", "BytearrayNode", "TypeNode", "ObjectNode", "NdArrayNode",
                             "DTypeNode", "RandomStateNode", "TreeNode"})


def write_fusion_model(pipe, path: Path) -> None:
    """The fitted pipeline as skops, read back through the bundle's own reader first: a type the
    allowlist lacks fails here, at export, not at a hospital's predict."""
    sio = skops_io()

    data = sio.dumps(pipe, compression=zipfile.ZIP_DEFLATED)  # its schema.json repeats every column name
    read_fusion_model(path, data)
    write_bytes(path, data)


def skops_io():
    """``skops.io``, imported without its walk of every scikit-learn module.

    On import, skops builds its *default* trusted-type list by importing all of scikit-learn (its tests and its
    torch array-API shim included: a second or more, and torch itself in a process that has not loaded it).
    A bundle never uses that list: :func:`read_fusion_model` audits the file against :data:`TRUSTED_TYPES` and
    passes that narrower list to skops. So the walk is given no estimators while skops imports; the types a
    fusion model holds are imported by name when it is built, as before.
    """
    if "skops.io" in sys.modules:
        return sys.modules["skops.io"]
    import sklearn.utils  # here: only to import skops (below), for a bundle with a fusion model

    walk = sklearn.utils.all_estimators
    sklearn.utils.all_estimators = lambda *args, **kwargs: []
    try:
        import skops.io  # here: a fused bundle's reader and writer only
    finally:
        sklearn.utils.all_estimators = walk
    return skops.io


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (or its type), for a one-line error."""
    return (str(exc).splitlines() or [type(exc).__name__])[0]



def _schema_nodes(schema) -> list[tuple[str, str]]:
    """(type, loader) of every node of a skops schema, iteratively (a deep file cannot blow the stack)."""
    out, todo = [], [schema]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            if {"__class__", "__module__", "__loader__"} & node.keys():
                out.append((f"{node.get('__module__')}.{node.get('__class__')}", str(node.get("__loader__"))))
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return out


def _audit(path: Path, data: bytes) -> None:
    """Refuse a file that is not skops, or that names a type or node kind outside the allowlists."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            if sum(i.file_size for i in z.infolist()) > MAX_MODEL_BYTES:
                raise ValueError(f"unpacks to more than {MAX_MODEL_BYTES} bytes")
            schema = json.loads(z.read("schema.json"))
    except (zipfile.BadZipFile, KeyError, ValueError, RecursionError) as exc:
        raise CeusError(f"{path}: not a skops file ({first_line(exc)}); a bundle's fusion model is "
                        "never unpickled") from None
    bad = sorted({f"{t} ({loader})" for t, loader in _schema_nodes(schema)
                  if t not in TRUSTED_TYPES or loader not in TRUSTED_LOADERS})
    if bad:
        raise CeusError(f"{path}: untrusted type(s) {', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''}; "
                        "refusing to load it")


def read_fusion_model(path: Path, data: bytes):
    """A skops fusion model from its bytes: audited, built from allowed types only, native arrays checked."""
    sio = skops_io()

    _audit(path, data)
    try:
        model = sio.loads(data, trusted=sorted(TRUSTED_TYPES))
        if not callable(getattr(model, "predict_proba", None)):
            raise CeusError(f"{path}: not a fitted classifier pipeline")
        check_native(model, path)
    except CeusError:
        raise
    except Exception as exc:  # skops and the rebuilt types raise many kinds for a damaged file
        raise CeusError(f"{path}: cannot be loaded ({type(exc).__name__}: {first_line(exc)}); refusing it") from None
    return model


def _nested(model) -> list:
    """Every object inside a fitted model (estimators, their lists and dicts), for :func:`check_native`."""
    seen, out, todo = set(), [], [model]
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, (str, bytes, bytearray, np.ndarray, int, float)):
            continue
        seen.add(id(obj))
        out.append(obj)
        if isinstance(obj, dict):
            todo.extend(obj.values())
        elif isinstance(obj, (list, tuple)):
            todo.extend(obj)
        elif type(obj).__module__.split(".")[0] in ("sklearn", "ceusfusion") and hasattr(obj, "__dict__"):
            todo.extend(vars(obj).values())
    return out


def _tree_ok(est) -> bool:
    """A decision tree's nodes as sklearn builds them: children after their parent, features in range."""
    t = est.tree_
    n = t.node_count
    if not 0 < n <= t.capacity or t.n_features != est.n_features_in_:
        return False
    left, right, feat, idx = t.children_left, t.children_right, t.feature, np.arange(n)
    leaf = left == -1
    inner = ~leaf
    return bool(np.array_equal(leaf, right == -1) and np.all((left[inner] > idx[inner]) & (left[inner] < n))
                and np.all((right[inner] > idx[inner]) & (right[inner] < n))
                and np.all((feat[inner] >= 0) & (feat[inner] < t.n_features)))


def _svc_ok(svc) -> bool:
    """libsvm's arrays agree on the number of support vectors and classes."""
    n_sv, k = svc.support_vectors_.shape[0], len(svc._n_support)
    return bool(svc._n_support.min() >= 0 and svc._n_support.sum() == n_sv == len(svc.support_)
                and svc._dual_coef_.shape == (k - 1, n_sv) and len(svc._intercept_) == k * (k - 1) // 2
                and svc.support_vectors_.shape[1] == svc.n_features_in_)


def check_native(model, path: Path) -> None:
    """What native code indexes without bounds checks: trees and SVMs checked, neighbour trees rebuilt from
    their own data (deterministic: the same tree, the same neighbours)."""
    # here: scikit-learn costs ~1 s of import, paid only by a bundle with a fusion model (predict imports this module)
    from sklearn.ensemble import BaseEnsemble
    from sklearn.neighbors import KNeighborsClassifier  # here: as above
    from sklearn.svm import SVC  # here: as above
    from sklearn.tree import BaseDecisionTree  # here: as above

    for obj in _nested(model):
        fitted = hasattr(obj, "n_features_in_")  # an ensemble's unfitted template is never run
        bad = fitted and ((isinstance(obj, BaseDecisionTree) and not _tree_ok(obj))
                          or (isinstance(obj, BaseEnsemble) and any(e.n_features_in_ != obj.n_features_in_
                                                                    for e in obj.estimators_))
                          or (isinstance(obj, SVC) and not _svc_ok(obj)))
        if bad:
            raise CeusError(f"{path}: the {type(obj).__name__} inside is inconsistent; refusing to load it")
        if isinstance(obj, KNeighborsClassifier) and getattr(obj, "_tree", None) is not None:
            obj._tree = type(obj._tree)(obj._fit_X, obj.leaf_size, metric=obj.effective_metric_,
                                        **(obj.effective_metric_params_ or {}))
