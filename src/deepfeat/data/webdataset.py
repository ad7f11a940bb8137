"""Webdataset-style tar shards: samples stored as consecutive tar members sharing a key.

A sample is consecutive members whose name, up to the first dot of its file name, is the same key
(``train/000017.jpg`` and ``train/000017.cls`` form sample ``train/000017``, as the webdataset library
groups them). Its image is the one member whose extension ends with an image type (jpg, jpeg, png, webp,
ppm, pgm, pbm, bmp, tif, tiff, gif; ``left.jpg`` counts); its label comes from ``.cls`` (text: a class
index or name), or from a ``.json`` object's ``label`` (also ``cls``, ``class`` or ``category``;
``labels`` for several). Classes are the distinct labels, sorted (numerically when every label is a
whole number).

Shards are read with the standard library (``tarfile``) to index the members once; images are then read
by offset, so nothing is extracted to disk and any number of threads can read. Bad input is reported,
never silently dropped: a sample without an image, with two images or without a label, a member that
cannot be parsed and a truncated or damaged shard (the members before the damage are kept; a shard that
stops between members, without tar's end-of-archive blocks, counts as truncated) are listed in
``ignored``; a key that appears again after other samples is refused, as across shards; an image that
does not decode is reported by the extraction with its shard and member name, like a bad file in a
folder.
"""

from __future__ import annotations

import glob
import json
import os
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from deepfeat.data.base import ImageDataset, labels_to_targets
from deepfeat.data.images import DEFAULT_MAX_PIXELS, DraftRule, load_image_bytes, printable
from deepfeat.errors import DataError, ImageError

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "ppm", "pgm", "pbm", "bmp", "tif", "tiff", "gif")
LABEL_KEYS = ("label", "cls", "class", "category")
_KEY = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")
_BRACES = re.compile(r"\{(\d+)\.\.(\d+)\}")


def is_shard_spec(spec: str | os.PathLike) -> bool:
    """True when ``spec`` names tar shards: a .tar path, a brace range or a wildcard ending in .tar."""
    text = os.fspath(spec).lower()
    return text.endswith(".tar")


def expand_shards(spec: str | os.PathLike) -> list[Path]:
    """The shard files of ``spec``: one .tar, ``shards-{000..009}.tar`` (zero-padded as written), a
    wildcard (``shards-*.tar``) or a folder holding .tar files; missing ones are an error."""
    text = os.fspath(spec)
    path = Path(text)
    if path.is_dir():
        found = sorted(path.glob("*.tar"))
        if not found:
            raise DataError(f"{printable(text)}: folder holds no .tar shards")
        return found
    names = [text]
    while any(_BRACES.search(n) for n in names):
        expanded = []
        for n in names:
            m = _BRACES.search(n)
            if m is None:
                expanded.append(n)
                continue
            lo, hi, width = int(m.group(1)), int(m.group(2)), len(m.group(1))
            if hi < lo:
                raise DataError(f"{text}: empty shard range {m.group(0)}")
            expanded += [n[: m.start()] + str(i).zfill(width) + n[m.end() :] for i in range(lo, hi + 1)]
        names = expanded
    out: list[Path] = []
    for n in names:
        if any(c in n for c in "*?["):
            matches = sorted(glob.glob(n))
            if not matches:
                raise DataError(f"{printable(n)}: no shard matches this pattern")
            out += [Path(m) for m in matches]
        elif not Path(n).is_file():
            raise DataError(f"{printable(n)}: shard not found")
        else:
            out.append(Path(n))
    return out


@dataclass
class _Sample:
    image: tuple[str, int, int] | None = None  # member name, data offset, size
    label: object = None
    problem: str | None = None


def _label_of(ext: str, data: bytes, where: str):
    text = data.decode("utf-8").strip()
    if ext == "json":
        obj = json.loads(text)
        if isinstance(obj, dict):
            for key in (*LABEL_KEYS, "labels"):
                if key in obj:
                    return obj[key]
            raise ValueError(f"no {', '.join(LABEL_KEYS)} or labels key")
        return obj
    return text


def _scan(shard: Path, ignored: list[tuple[str, str]]) -> dict[str, _Sample]:
    """Index one shard: samples by key, in member order; problems go to ``ignored``."""
    where = printable(shard)
    size = shard.stat().st_size
    samples: dict[str, _Sample] = {}
    try:
        tar = tarfile.open(shard, mode="r:")  # noqa: SIM115 - closed by the with block below
    except (tarfile.TarError, OSError) as exc:
        with open(shard, "rb") as fh:
            magic = fh.read(6)
        if magic.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"\x28\xb5\x2f\xfd")):
            raise DataError(
                f"{where}: a compressed tar (gzip, bzip2, xz or zstd); images are read from the shard by "
                "offset, so decompress it to a plain .tar first"
            ) from None
        raise DataError(f"{where}: not a readable tar file ({exc})") from None
    with tar:
        count, last = 0, None
        while True:
            try:
                member = tar.next()
            except (tarfile.TarError, OSError, EOFError) as exc:
                ignored.append((where, f"truncated or damaged after {count} members ({exc}); rest unread"))
                break
            if member is None:
                if not _ends_cleanly(shard, tar.offset, size):
                    ignored.append(
                        (
                            where,
                            f"ends after {count} members without tar's end-of-archive blocks (truncated?)",
                        )
                    )
                break
            count += 1
            if not member.isfile():
                continue
            name = member.name
            m = _KEY.match(name)
            if m is None or Path(name).name.startswith("."):
                ignored.append((f"{where}:{name}", "member name has no key.extension form"))
                continue
            key, ext = m.group(1), m.group(2).lower()
            if key != last and key in samples:
                raise DataError(
                    f"{where}:{name}: key {key!r} appears again after other samples; a sample's members "
                    "are consecutive and each sample key may appear once"
                )
            last = key
            sample = samples.setdefault(key, _Sample())
            if member.offset_data + member.size > size:
                sample.problem = f"member {name} is cut off (the shard is truncated)"
            elif ext.rsplit(".", 1)[-1] in IMAGE_EXTENSIONS:
                if sample.image is not None:
                    sample.problem = (
                        f"two image members ({sample.image[0]}, {name}); a sample holds one image"
                    )
                sample.image = (name, member.offset_data, member.size)
            elif ext in ("cls", "cls2", "label", "txt", "json") and sample.label is None:
                try:
                    fh = tar.extractfile(member)
                    sample.label = _label_of(ext, fh.read() if fh else b"", f"{where}:{name}")
                except (ValueError, UnicodeDecodeError) as exc:
                    sample.problem = f"label member {name} cannot be read ({exc})"
    return samples


def _ends_cleanly(shard: Path, offset: int, size: int) -> bool:
    """True when the tar's end-of-archive (a zero block) follows its last member at ``offset``."""
    if size - offset < tarfile.BLOCKSIZE:
        return False
    with open(shard, "rb") as fh:
        fh.seek(offset)
        return not any(fh.read(tarfile.BLOCKSIZE))


def tar_dataset(spec: str | os.PathLike, name: str | None = None) -> TarDataset:
    """A dataset of the samples in webdataset-style tar shards (see the module docstring)."""
    shards = expand_shards(spec)
    ignored: list[tuple[str, str]] = []
    ids, labels, members, owners = [], [], [], []
    seen: dict[str, str] = {}
    for s, shard in enumerate(shards):
        for key, sample in _scan(shard, ignored).items():
            where = f"{printable(shard)}:{key}"
            if sample.problem:
                ignored.append((where, sample.problem))
                continue
            if sample.image is None:
                ignored.append((where, f"no image member (.{', .'.join(IMAGE_EXTENSIONS[:4])}, ...)"))
                continue
            if sample.label in (None, "", []):
                ignored.append((where, "no label (.cls, or .json with a 'label' key)"))
                continue
            if key in seen:
                raise DataError(
                    f"{where}: key {key!r} also appears in {seen[key]}; each sample key may appear once"
                )
            seen[key] = printable(shard)
            ids.append(key)
            labels.append(sample.label)
            members.append(sample.image)
            owners.append(s)
    if not ids:
        first = f" (first problem: {ignored[0][0]}: {ignored[0][1]})" if ignored else ""
        raise DataError(f"{printable(os.fspath(spec))}: no usable sample in {len(shards)} shards{first}")
    _check_one_label_kind(labels, ids, owners, shards)
    classes, targets = labels_to_targets(labels)
    return TarDataset(
        name=name or Path(shards[0]).stem.rstrip("-_0123456789") or "shards",
        ids=ids,
        classes=classes,
        targets=targets,
        ignored=ignored,
        shards=[Path(p) for p in shards],
        members=members,
        owner=np.asarray(owners, dtype=np.int64),
    )


def _check_one_label_kind(labels: list, ids: list[str], owners: list[int], shards: list) -> None:
    """A DataError where the labels mix class indexes and class names (``.cls`` of "0" in one shard,
    "cat" in another): read together they would make two classes of each."""
    kinds: dict[bool, int] = {}
    for i, label in enumerate(labels):
        for value in label if isinstance(label, list) else [label]:
            kinds.setdefault(bool(re.fullmatch(r"-?\d+", str(value).strip())), i)
    if len(kinds) == 2:
        a, b = kinds[True], kinds[False]
        raise DataError(
            f"the labels mix class indexes and class names: {ids[a]!r} in {printable(shards[owners[a]])} "
            f"has {labels[a]!r}, {ids[b]!r} in {printable(shards[owners[b]])} has {labels[b]!r}; write "
            "one kind in every shard"
        )


@dataclass
class TarDataset(ImageDataset):
    """Images stored as members of tar shards; item i is ``members[i]`` of ``shards[owner[i]]``."""

    shards: list[Path] = field(default_factory=list)
    members: list[tuple[str, int, int]] = field(default_factory=list)
    owner: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def source(self, index: int) -> str:
        return f"{printable(self.shards[self.owner[index]])}:{self.members[index][0]}"

    def _bytes(self, index: int) -> bytes:
        _, offset, size = self.members[index]
        try:
            fd = os.open(self.shards[self.owner[index]], os.O_RDONLY)
            try:
                data = os.pread(fd, size, offset)
            finally:
                os.close(fd)
        except OSError as exc:
            raise ImageError(self.source(index), f"cannot read shard ({exc.strerror or exc})") from exc
        if len(data) != size:
            raise ImageError(self.source(index), "shard shorter than its index (changed since it was read)")
        return data

    def load(
        self, index: int, *, max_pixels: int = DEFAULT_MAX_PIXELS, draft: DraftRule | None = None
    ) -> Image.Image:
        return load_image_bytes(self._bytes(index), self.source(index), max_pixels=max_pixels, draft=draft)

    def image_size(self, index: int) -> tuple[int, int] | None:
        import io

        try:
            with Image.open(io.BytesIO(self._bytes(index))) as img:
                w, h = img.size
                orientation = img.getexif().get(0x0112, 1)
        except Exception:  # a bad image is reported when it is loaded
            return None
        return (h, w) if orientation in (5, 6, 7, 8) else (w, h)

    def _hash_content(self, h) -> None:
        for shard in self.shards:
            try:
                st = shard.stat()
                h.update(f"{shard.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
            except OSError:
                h.update(f"{shard.name}\0missing\n".encode("utf-8", "surrogateescape"))
        for item_id, (member, offset, size) in zip(self.ids, self.members):
            h.update(f"{item_id}\0{member}\0{offset}\0{size}\n".encode("utf-8", "surrogateescape"))
