"""The catalog of recommended base models (torch-free): the shipped core/models/catalog.toml, plus the user's own
files of the same form (`--catalog FILE`, a catalog.toml in a models folder).

Each `[[model]]` table names a bundle: the files of one base model with the parts it needs (a Flux transformer with
CLIP-L, T5-XXL and its autoencoder), where each comes from on the Hugging Face hub, its exact size and sha256, the
licence, whether the repo is gated, and the smallest GPU it suits.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from .. import families

SHIPPED = Path(__file__).with_name("catalog.toml")
REQUIRED = ("name", "title", "family", "repo", "files", "size_bytes", "license", "gated", "source")


class CatalogError(ValueError):
    """A catalog file that cannot be used; the message names the file, the entry and the field."""


@dataclass(frozen=True)
class CatalogFile:
    repo: str
    path: str  # inside the repo
    size: int
    sha256: str  # "" when the catalog does not know it (the hub's own is used)

    @property
    def name(self) -> str:
        return Path(self.path).name


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    title: str
    family: str
    repo: str
    files: tuple[CatalogFile, ...]
    license: str
    gated: bool
    source: tuple[str, ...]
    vram_tier: int | None = None
    variant: str = ""
    catalog: str = ""  # the file it came from

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def licence_page(self) -> str:
        return f"https://huggingface.co/{self.repo}"

    def as_dict(self) -> dict:
        return {"name": self.name, "title": self.title, "family": self.family, "variant": self.variant,
                "repo": self.repo, "size_bytes": self.size, "license": self.license, "gated": self.gated,
                "vram_tier": self.vram_tier, "catalog": self.catalog, "source": list(self.source),
                "files": [{"repo": f.repo, "path": f.path, "size_bytes": f.size, "sha256": f.sha256}
                          for f in self.files]}


def _entry(table: dict, where: str) -> CatalogEntry:
    name = table.get("name", "?")
    here = f"{where}, model '{name}'"
    missing = [k for k in REQUIRED if k not in table]
    if missing:
        raise CatalogError(f"{here}: missing {', '.join(missing)} (every [[model]] needs {', '.join(REQUIRED)})")
    files = table["files"]
    if isinstance(files, str):
        files = [files]
    n = len(files)
    sizes = table["size_bytes"] if isinstance(table["size_bytes"], list) else [table["size_bytes"]]
    shas = table.get("sha256", [""] * n)
    shas = shas if isinstance(shas, list) else [shas]
    repos = table.get("file_repos", [table["repo"]] * n)
    for key, value in (("size_bytes", sizes), ("sha256", shas), ("file_repos", repos)):
        if len(value) != n:
            raise CatalogError(f"{here}: {key} has {len(value)} values for {n} files (one per file, in order)")
    if not all(isinstance(s, int) and s > 0 for s in sizes):
        raise CatalogError(f"{here}: size_bytes must be whole numbers of bytes, greater than 0")
    for sha in shas:
        if sha and (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha.lower())):
            raise CatalogError(f"{here}: sha256 '{sha}' is not 64 hex digits (leave it \"\" when unknown)")
    if families.find(table["family"]) is None:
        raise CatalogError(f"{here}: family '{table['family']}' is not one this program trains "
                           f"({', '.join(families.names())})")
    source = table["source"] if isinstance(table["source"], list) else [table["source"]]
    return CatalogEntry(
        name=str(name), title=str(table["title"]), family=table["family"], repo=table["repo"],
        files=tuple(CatalogFile(r, p, s, h.lower()) for r, p, s, h in zip(repos, files, sizes, shas)),
        license=str(table["license"]), gated=bool(table["gated"]), source=tuple(map(str, source)),
        vram_tier=table.get("vram_tier"), variant=str(table.get("variant", "")), catalog=where)


def read_catalog(path: str | Path) -> list[CatalogEntry]:
    p = Path(path).expanduser()
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CatalogError(f"catalog {p} not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CatalogError(f"catalog {p} cannot be read: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise CatalogError(f"catalog {p} is not valid TOML: {e}") from None
    tables = data.get("model", [])
    if not isinstance(tables, list):
        raise CatalogError(f"catalog {p}: models are [[model]] tables (an array of tables)")
    return [_entry(t, str(p)) for t in tables]


def load_catalog(extra: list[str | Path] = (), folders: list[str | Path] = ()) -> list[CatalogEntry]:
    """The shipped entries, then those of `extra` files and of a catalog.toml in each of `folders` (a folder that
    does not exist is skipped: an unplugged drive). A later entry replaces an earlier one of the same name."""
    paths = [SHIPPED, *map(Path, extra)]
    paths += [Path(f).expanduser() / "catalog.toml" for f in folders if (Path(f).expanduser() / "catalog.toml").is_file()]
    found: dict[str, CatalogEntry] = {}
    for p in paths:
        for e in read_catalog(p):
            found[e.name] = e
    return list(found.values())


def suggest_entry(family: str, vram_gb: float | None, entries: list[CatalogEntry] | None = None) -> CatalogEntry | None:
    """The catalog's model for a family and GPU: the first entry of the family whose VRAM tier fits (any, without a
    GPU size), the shipped catalog's order being the recommended one."""
    for e in entries if entries is not None else load_catalog():
        if e.family == family and (vram_gb is None or not e.vram_tier or e.vram_tier <= vram_gb):
            return e
    return None


def find_entry(entries: list[CatalogEntry], name: str) -> CatalogEntry:
    for e in entries:
        if e.name == name:
            return e
    raise CatalogError(f"no model '{name}' in the catalog (known: {', '.join(e.name for e in entries)}); "
                       "`python -m core models list` shows them")
