"""Write a machine-readable copyright file for the package and every distribution bundled in its venv.

Run by packaging/build.sh with the staged venv's interpreter, so ``importlib.metadata`` sees exactly what the
package ships:  python packaging/copyright.py REPO PREFIX PYVER > copyright
"""

from __future__ import annotations

import importlib.metadata as md
import pathlib
import sys


def license_of(dist: md.Distribution) -> str:
    """The distribution's license in one short line: License-Expression, License, or its classifier."""
    meta = dist.metadata
    for value in (meta.get("License-Expression"), meta.get("License")):
        if value and "\n" not in value.strip() and len(value) < 80:
            return value.strip()
    classifiers = [c.split(" :: ")[-1] for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    return " or ".join(classifiers) or "see its license file"


def main() -> None:
    repo, prefix, pyver = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    site = f"{prefix.lstrip('/')}/lib/python{pyver}/site-packages"
    print("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/")
    print("Upstream-Name: aiwg-service")
    print()
    print("Files: *")
    print("Copyright: the aiwg-service authors")
    print("License: Expat")
    texts = [p for p in ("LICENSE", "LICENSE.txt", "LICENSE.md", "COPYING") if (repo / p).is_file()]
    if texts:
        for line in (repo / texts[0]).read_text().splitlines():
            print(f" {line}" if line.strip() else " .")
    else:
        print(" aiwg-service is distributed under the MIT (Expat) license, as its pyproject.toml declares.")
    print()
    print("Comment: Bundled Python distributions. Each one's full license text ships in its")
    print(f" dist-info directory under /{site}.")
    for dist in sorted(md.distributions(), key=lambda d: d.metadata["Name"].lower()):
        name = dist.metadata["Name"]
        if name.lower().replace("_", "-") == "aiwg-service":
            continue
        files = dist.files or []
        tops = sorted({f.parts[0] for f in files if f.parts and not f.parts[0].startswith("..")})
        print()
        print("Files: " + " ".join(f"{site}/{t}" for t in tops))
        print(f"Copyright: the {name} authors ({name} {dist.version})")
        print(f"License: {license_of(dist)}")


if __name__ == "__main__":
    main()
