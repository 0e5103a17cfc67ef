"""Reading manifests for `render`: files, directories, stdin, every document named."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from traceroute_operator.manifests import ManifestError, expand, parse, read

PROBE = "apiVersion: traceroute.dev/v1alpha1\nkind: TracerouteProbe\nmetadata: {name: %s}\n"


def test_every_document_is_named_by_source_index_kind_and_name() -> None:
    docs = parse("p.yaml", "---\n" + PROBE % "a" + "---\n# only a comment\n---\n" + PROBE % "b")
    assert [d.label for d in docs] == [
        "p.yaml#0 (TracerouteProbe a)",
        "p.yaml#2 (TracerouteProbe b)",
    ]


def test_a_list_contributes_its_items() -> None:
    text = "apiVersion: v1\nkind: List\nitems:\n- {kind: TracerouteProbe, metadata: {name: a}}\n"
    (doc,) = parse("-", text)
    assert doc.label == "stdin#0.items[0] (TracerouteProbe a)"
    with pytest.raises(ManifestError, match="stdin#0: a List without items"):
        parse("-", "kind: List\n")


def test_files_joined_without_a_separator_are_refused_not_merged() -> None:
    with pytest.raises(ManifestError, match=r"x.yaml#1: duplicate key 'apiVersion' at line 8"):
        parse("x.yaml", PROBE % "a" + "---\n" + PROBE % "b" + PROBE % "c")


def test_broken_yaml_names_the_document() -> None:
    with pytest.raises(ManifestError, match=r"y.yaml#1: cannot read: not YAML"):
        parse("y.yaml", PROBE % "a" + "---\na: [\n")


def test_directories_expand_to_their_manifests_sorted(tmp_path: Path) -> None:
    for name in ("b.yaml", "a.yml", "c.json", "notes.txt"):
        (tmp_path / name).write_text("{}")
    (tmp_path / "sub.yaml").mkdir()
    assert expand([str(tmp_path), "-"]) == [
        str(tmp_path / n) for n in ("a.yml", "b.yaml", "c.json")
    ] + ["-"]
    with pytest.raises(ManifestError, match="no such file"):
        expand([str(tmp_path / "missing.yaml")])
    with pytest.raises(ManifestError, match=re.escape("no .yaml/.yml/.json file")):
        expand([str(tmp_path / "sub.yaml")])
    with pytest.raises(ManifestError, match="once"):
        expand(["-", "-"])


def test_read_keeps_the_order_of_the_sources(tmp_path: Path) -> None:
    (tmp_path / "one.yaml").write_text(PROBE % "one")
    docs = read([str(tmp_path / "one.yaml"), "-"], stdin=lambda: PROBE % "two")
    assert [d.label for d in docs] == [
        f"{tmp_path / 'one.yaml'}#0 (TracerouteProbe one)",
        "stdin#0 (TracerouteProbe two)",
    ]
