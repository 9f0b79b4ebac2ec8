"""Checkpoint metadata is a ``CheckpointMeta`` everywhere but in ``lewc/training/checkpoints.py``.

Static: every ``lewc/**/*.py`` and ``benchmarks/*.py`` is parsed, never imported. Outside checkpoints.py
no module indexes checkpoint metadata by key — a string subscript or ``.get("…")`` on a name that holds metadata
(``meta``, ``meta_a``, ``meta_b``, ``metas[i]``, ``pair.meta_a`` …) or on a stored sidecar parsed by
hand (``json.loads(res.attrs["sidecar_a"])["width"]``) — and none calls the low-level ``read_meta``.
The dict form belongs to the JSON boundary: ``to_dict`` and ``save`` in checkpoints.py,
``reported_meta`` (whose keys are variables, not field names).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXEMPT = {"lewc/training/checkpoints.py"}  # the record's own module: the JSON boundary
META_NAMES = {"meta", "meta_a", "meta_b", "meta_b_aligned", "wide_meta", "sidecar", "side"}


def holds_meta(node: ast.expr) -> bool:
    """A name, attribute or ``metas[i]`` that holds checkpoint metadata, or a sidecar parsed from JSON."""
    if isinstance(node, ast.Name):
        return node.id in META_NAMES
    if isinstance(node, ast.Attribute):
        return node.attr in META_NAMES
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "metas":
        return True
    if isinstance(node, ast.Call) and ast.unparse(node.func) == "json.loads":
        return "sidecar" in ast.unparse(node)
    return False


def is_field_name(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def by_key(source: str, path: str = "<source>") -> list[str]:
    """``path:line  code`` of each metadata field read by key, and of each call of ``read_meta``."""
    found = []
    for node in ast.walk(ast.parse(source, filename=path)):
        hit = (
            (isinstance(node, ast.Subscript) and holds_meta(node.value) and is_field_name(node.slice))
            or (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get"
                and holds_meta(node.func.value)
                and node.args
                and is_field_name(node.args[0])
            )
            or (isinstance(node, ast.Call) and ast.unparse(node.func).split(".")[-1] == "read_meta")
        )
        if hit:
            found.append(f"{path}:{node.lineno}  {ast.unparse(node)}")
    return found


def test_no_module_outside_checkpoints_reads_metadata_by_key():
    found = []
    for file in sorted([*(ROOT / "lewc").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py")]):
        rel = file.relative_to(ROOT).as_posix()
        if rel not in EXEMPT:
            found += by_key(file.read_text(encoding="utf-8"), rel)
    assert not found, "checkpoint metadata read by key (use CheckpointMeta's attributes):\n" + "\n".join(found)


def test_the_checker_finds_each_form_and_passes_attributes():
    bad = [
        'meta["width"]',
        "meta_a['sha256'][:8]",
        'pair.meta_b.get("sha256", "")',
        'metas[0]["dataset"]',
        'json.loads(res.attrs["sidecar_a"])["width"]',
        "checkpoints.read_meta(path)",
        "read_meta(path)",
    ]
    for code in bad:
        assert by_key(code), code
    good = [
        "meta.width",
        "meta_a.sha256[:8]",
        "metas[0].trained_with('n_calib')",
        "info['passes']",  # an alignment's own record, not a sidecar
        "{k: sidecar[k] for k in CLAIMS if k in sidecar}",  # the JSON boundary: keys are variables
        'res.attrs["sidecar_a"]',
    ]
    for code in good:
        assert not by_key(code), code
