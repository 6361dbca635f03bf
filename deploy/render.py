"""Render a kustomization of deploy/kubernetes without kustomize: `python deploy/render.py DIR`.

The subset of kustomize these manifests use, nothing more: `resources` (files, and folders with
their own kustomization.yaml), `patches` given by `path` (strategic merge: maps merge, a list of
containers or volumes merges by name, any other list is replaced) and `images` (newName, newTag or
digest). `kubectl kustomize` renders the same objects where it is installed (the suite compares
both); an unsupported field is an error here rather than a silent difference.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "patches", "images"}
MERGED_BY_NAME = {"containers", "initContainers", "volumes", "volumeMounts", "env", "ports"}


def render(folder: Path) -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(kustomization) - SUPPORTED
    if unknown:
        raise ValueError(f"{folder}/kustomization.yaml: {sorted(unknown)} not supported by deploy/render.py")
    objects: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = (folder / entry).resolve()
        objects += render(path) if path.is_dir() else _documents(path)
    for patch in kustomization.get("patches", []):
        if set(patch) != {"path"}:
            raise ValueError(f"{folder}: only patches given by path are supported: {patch}")
        for change in _documents(folder / patch["path"]):
            target = next((o for o in objects if _key(o) == _key(change)), None)
            if target is None:
                raise ValueError(f"{folder}/{patch['path']}: no {_key(change)} to patch")
            _merge(target, change)
    for image in kustomization.get("images", []):
        _set_image(objects, image)
    return objects


def _documents(path: Path) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def _key(obj: dict[str, Any]) -> tuple[str, str, str | None]:
    return obj["kind"], obj["metadata"]["name"], obj["metadata"].get("namespace")


def _merge(target: dict[str, Any], change: dict[str, Any]) -> None:
    for name, value in change.items():
        if isinstance(value, dict) and isinstance(target.get(name), dict):
            _merge(target[name], value)
        elif name in MERGED_BY_NAME and isinstance(value, list) and isinstance(target.get(name), list):
            for item in value:
                same = next((t for t in target[name] if t.get("name") == item.get("name")), None)
                if same is None:
                    target[name].append(item)
                else:
                    _merge(same, item)
        else:
            target[name] = value


def _set_image(node: Any, image: dict[str, str]) -> None:
    if isinstance(node, list):
        for item in node:
            _set_image(item, image)
    elif isinstance(node, dict):
        for field, value in node.items():
            if field == "image" and isinstance(value, str) and value.split("@")[0].split(":")[0] == image["name"]:
                name = image.get("newName", image["name"])
                if "digest" in image:
                    node[field] = f"{name}@{image['digest']}"
                elif "newTag" in image:
                    node[field] = f"{name}:{image['newTag']}"
                else:
                    node[field] = name
            else:
                _set_image(value, image)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python deploy/render.py deploy/kubernetes/overlays/digitalocean")
    print(yaml.safe_dump_all(render(Path(sys.argv[1])), sort_keys=False), end="")  # noqa: T201 (its output)
