"""Issue 25: each record between stages has one typed reader, so no module reads its keys by name.

A trained model's config.json is read through ``models.registry.ModelRecord`` (the legacy defaults of models
trained before a key was recorded live there, once), a bundle's model entries through
``deploy.export.BundledModel``. A ``cfg["test_scoring"]`` or ``m.get("crop", ...)`` anywhere else is a second
reader with its own default: this test finds one in the source's syntax tree.
"""

from __future__ import annotations

import ast

from paths import ROOT

SRC = ROOT / "src" / "ceusfusion"

# key -> the modules that may read it by name (its record's owner, and the writer of the record)
RECORD_KEYS = {
    # a trained model's config.json (models.registry.ModelRecord; models.train writes it)
    # (and a bundle.json model entry: deploy.export.BundledModel; the CV ranking's rows: models.select)
    **{k: {"models/registry.py", "models/train.py", "deploy/export.py", "models/select.py"} for k in (
        "test_scoring", "image_size", "frame_channels", "input_mode", "normalisation", "pretrained",
        "class_weight", "finetune", "dropout")},
    # "crop" is also the bundle's prepare box (ingest.prepare.PrepareParams, read through deploy.export.prepare_params)
    "crop": {"models/registry.py", "models/train.py", "ingest/prepare.py", "deploy/export.py"},
}


def key_reads(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, key) of every ``x["key"]`` load and ``x.get("key", ...)`` call with a guarded key."""
    out = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load)
                and isinstance(node.slice, ast.Constant) and node.slice.value in RECORD_KEYS):
            out.append((node.lineno, node.slice.value))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
              and node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value in RECORD_KEYS):
            out.append((node.lineno, node.args[0].value))
    return out


def test_no_record_key_is_read_outside_its_record_module():
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        for line, key in key_reads(ast.parse(path.read_text(), str(path))):
            if rel not in RECORD_KEYS[key]:
                bad.append(f"{rel}:{line}: reads {key!r} by name")
    assert not bad, "record keys read outside their record's module:\n" + "\n".join(bad)


def test_the_check_finds_a_raw_read():
    """The walker itself: a subscript load and a .get are found, a dict literal and a store are not."""
    tree = ast.parse('cfg["test_scoring"]\nm.get("crop", None)\nd = {"crop": 1}\ncfg["image_size"] = 3\n')
    assert key_reads(tree) == [(1, "test_scoring"), (2, "crop")]
