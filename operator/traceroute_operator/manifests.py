"""YAML manifests as ``render`` reads them: files, directories, stdin, every document named.

Parsed at the edge once: each document becomes a ``Document`` that knows where it came
from (file and position), so a refusal can name it. Duplicate keys are an error, not "the
last one wins": files joined without ``---`` (``cat a.yaml b.yaml``) would otherwise read as
one document holding only the last file's values.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

STDIN = "-"
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


class ManifestError(ValueError):
    """A source or document that cannot be read; the message names it."""


@dataclass(frozen=True)
class Document:
    source: str  # the file, or "-" for stdin
    index: int  # position in the source, from 0
    body: Any
    item: int | None = None  # position in a List's items

    @property
    def kind(self) -> str | None:
        kind = self.body.get("kind") if isinstance(self.body, Mapping) else None
        return kind if isinstance(kind, str) else None

    @property
    def label(self) -> str:
        """``file#2`` or ``file#2.items[1]``, then the kind and name when there are any."""
        where = f"{_shown(self.source)}#{self.index}"
        if self.item is not None:
            where += f".items[{self.item}]"
        meta = self.body.get("metadata") if isinstance(self.body, Mapping) else None
        name = meta.get("name") if isinstance(meta, Mapping) else None
        if self.kind and isinstance(name, str):
            return f"{where} ({self.kind} {name})"
        return where


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping with the same key twice."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> Any:
    seen: set[Any] = set()
    for key_node, _value in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, str | int | float | bool) and key in seen:
            mark = key_node.start_mark
            raise ManifestError(
                f"duplicate key {key!r} at line {mark.line + 1} "
                "(files joined without '---' between them?)"
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_unique_mapping,
)


def expand(paths: Sequence[str]) -> list[str]:
    """Files to read: each path as given, a directory as its manifest files (sorted)."""
    files: list[str] = []
    for path in paths:
        if path == STDIN or os.path.isfile(path):
            files.append(path)
        elif os.path.isdir(path):
            found = sorted(
                os.path.join(path, name)
                for name in os.listdir(path)
                if name.endswith(MANIFEST_SUFFIXES) and os.path.isfile(os.path.join(path, name))
            )
            if not found:
                raise ManifestError(f"{path}: no {'/'.join(MANIFEST_SUFFIXES)} file in it")
            files.extend(found)
        else:
            raise ManifestError(f"{path}: no such file or directory")
    if files.count(STDIN) > 1:
        raise ManifestError("'-' (stdin) can be read once")
    return files


def parse(source: str, text: str) -> list[Document]:
    """Every document of one source (empty ones skipped); a List contributes its items."""
    documents: list[Document] = []
    position = 0  # documents read so far: the one that failed has this index
    try:
        for body in yaml.load_all(text, Loader=_UniqueKeyLoader):
            documents.extend(_documents(source, position, body))
            position += 1
    except ManifestError as exc:
        raise ManifestError(f"{_shown(source)}#{position}: {exc}") from None
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())  # one line, also for YAML's multi-line errors
        raise ManifestError(
            f"{_shown(source)}#{position}: cannot read: not YAML: {detail}"
        ) from None
    return documents


def _shown(source: str) -> str:
    return "stdin" if source == STDIN else source


def _documents(source: str, index: int, body: Any) -> Iterator[Document]:
    if body is None:
        return
    items = body.get("items") if isinstance(body, Mapping) else None
    if isinstance(body, Mapping) and str(body.get("kind", "")).endswith("List"):
        if not isinstance(items, list):
            raise ManifestError("a List without items")
        for item, entry in enumerate(items):
            yield Document(source, index, entry, item)
        return
    yield Document(source, index, body)


def read(paths: Sequence[str], stdin: Callable[[], str]) -> list[Document]:
    """Every document of every path, in order (``stdin`` is called for ``-``)."""
    documents: list[Document] = []
    for source in expand(paths):
        try:
            if source == STDIN:
                text = stdin()
            else:
                with open(source, encoding="utf-8") as handle:
                    text = handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise ManifestError(f"{source}: cannot read: {exc}") from None
        documents.extend(parse(source, text))
    return documents
