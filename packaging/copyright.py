"""The package's licences, generated from the metadata of exactly what its venv ships.

Run by packaging/build.sh with the staged venv's interpreter, so ``importlib.metadata`` sees what the package
ships and nothing else:

    python packaging/copyright.py REPO PREFIX PYVER STAGE > copyright    a machine-readable (DEP-5) copyright
                                                                        file, every licence text included
    python packaging/copyright.py --spdx                                 the rpm's License: one SPDX expression

Each bundled distribution's licence comes from its ``License-Expression``, else a ``License`` field that is an
SPDX id, else its trove classifiers (several mean a choice: OR), else a known spelling of the ``License`` field.
A distribution whose licence cannot be told is an error: the build stops rather than ship an unknown licence.
"""

from __future__ import annotations

import importlib.metadata as md
import pathlib
import re
import sys

# trove classifiers and free-text spellings -> SPDX ids
ALIASES = {
    "mit license": "MIT", "the mit license (mit)": "MIT", "mit": "MIT",
    "apache software license": "Apache-2.0", "apache 2.0": "Apache-2.0", "apache license 2.0": "Apache-2.0",
    "python software foundation license": "PSF-2.0",
    "mozilla public license 2.0 (mpl 2.0)": "MPL-2.0",
    "isc license (iscl)": "ISC", "isc license": "ISC",
    "bsd 2-clause license": "BSD-2-Clause", "bsd 3-clause license": "BSD-3-Clause",
    "gnu lesser general public license v2 or later (lgplv2+)": "LGPL-2.1-or-later", "lgplv2+": "LGPL-2.1-or-later",
}
SPDX_ID = re.compile(r"^[A-Za-z0-9.+-]+(?: (?:AND|OR|WITH) [A-Za-z0-9.+-]+)*$")
KNOWN_IDS = {"MIT", "MIT-0", "Apache-2.0", "BSD-2-Clause", "BSD-3-Clause", "ISC", "MPL-2.0", "PSF-2.0",
             "LGPL-2.1-or-later", "CNRI-Python", "EPL-2.0", "GPL-2.0-or-later"}
LICENSE_FILE = re.compile(r"(^|/)(LICEN[CS]E|COPYING|NOTICE)[^/]*$", re.IGNORECASE)


def license_texts(dist: md.Distribution) -> list[tuple[str, str]]:
    """(file name, text) of every licence file the distribution ships, as installed."""
    out = []
    for f in dist.files or []:
        if LICENSE_FILE.search(str(f)) and ".dist-info/" in str(f):
            path = pathlib.Path(str(dist.locate_file(f)))
            if path.is_file():
                out.append((f.name, path.read_text(errors="replace")))
    return out


def bsd_variant(dist: md.Distribution) -> str:
    """"BSD License" names no variant: the third clause (no endorsement) tells 3-clause from 2-clause."""
    text = " ".join(t for _, t in license_texts(dist))
    return "BSD-3-Clause" if re.search(r"neither the name", text, re.IGNORECASE) else "BSD-2-Clause"


def spdx_of(dist: md.Distribution) -> str:
    """The distribution's licence as an SPDX expression; ValueError when nothing says which."""
    meta = dist.metadata
    expr = (meta.get("License-Expression") or "").strip()
    if expr:
        return expr
    field = (meta.get("License") or "").strip()
    if field and "\n" not in field and SPDX_ID.match(field) and all(
            tok in KNOWN_IDS or tok in ("AND", "OR", "WITH") for tok in field.split()):
        return field
    ids = []
    for c in meta.get_all("Classifier") or []:
        if c.startswith("License ::"):
            name = c.split(" :: ")[-1]
            if name.lower() == "bsd license":
                ids.append(bsd_variant(dist))
            elif name.lower() in ALIASES:
                ids.append(ALIASES[name.lower()])
    if ids:
        return " OR ".join(sorted(set(ids)))
    if field.lower() in ALIASES:
        return ALIASES[field.lower()]
    raise ValueError(f"{meta['Name']} {dist.version}: no licence can be told from its metadata")


def bundled() -> list[md.Distribution]:
    """Every distribution in the venv but aiwg-service itself, by name."""
    dists = {d.metadata["Name"].lower().replace("_", "-"): d for d in md.distributions()}
    dists.pop("aiwg-service", None)
    return [dists[k] for k in sorted(dists)]


def spdx_all() -> str:
    """One expression for the whole package: ours (MIT) and every bundled distribution's, AND-ed."""
    exprs = ["MIT"] + [spdx_of(d) for d in bundled()]
    unique = list(dict.fromkeys(exprs))
    return " AND ".join(f"({e})" if " " in e else e for e in unique)


def indented(text: str) -> list[str]:
    """A licence text as a DEP-5 continuation: each line indented, empty lines as ' .'."""
    return [f" {line.rstrip()}" if line.strip() else " ." for line in text.strip("\n").splitlines()]


def dep5(repo: pathlib.Path, prefix: str, pyver: str, stage: pathlib.Path) -> list[str]:
    site = f"{prefix.lstrip('/')}/lib/python{pyver}/site-packages"
    out = ["Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/",
           "Upstream-Name: aiwg-service", "",
           "Files: *", "Copyright: the aiwg-service authors", "License: MIT"]
    out += indented((repo / "LICENSE").read_text())
    for dist in bundled():
        name, version = dist.metadata["Name"], dist.version
        files = [f for f in dist.files or [] if (stage / site / str(f)).exists()]
        tops = sorted({f.parts[0] for f in files if f.parts and f.parts[0] != ".."})
        texts = license_texts(dist)
        if not texts:
            raise ValueError(f"{name} {version} ships no licence file")
        out += ["", "Files: " + " ".join(f"{site}/{t}" for t in tops),
                f"Copyright: the {name} authors ({name} {version})",
                f"License: {spdx_of(dist).replace(' AND ', ' and ').replace(' OR ', ' or ')}"]
        for fname, text in texts:
            out += [f" The text of {fname}:", " .", *indented(text), " ."]
        out.pop()  # no trailing " ." line
    return out


def main() -> None:
    try:
        if sys.argv[1:] == ["--spdx"]:
            print(spdx_all())
            return
        repo, prefix, pyver, stage = sys.argv[1:5]
        print("\n".join(dep5(pathlib.Path(repo), prefix, pyver, pathlib.Path(stage))))
    except ValueError as exc:
        sys.exit(f"copyright.py: {exc}")


if __name__ == "__main__":
    main()
