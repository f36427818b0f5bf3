#!/usr/bin/env python3
"""Collects the licences of everything linked into the static `sagebrush` binary.

Writes into OUT_DIR:
  sagebrush/LICENSE               the project's licence
  crates/<name>-<version>/...     each Rust dependency's LICENSE*/COPYING*/NOTICE*/COPYRIGHT* files
  system/<package>                Debian copyright files of the C libraries linked statically
                                  (glibc, libgcc, libstdc++) and of the CA certificate bundle
  THIRD-PARTY.md                  one line per crate: name, version, licence expression

Usage: scripts/licenses.py OUT_DIR   (from any directory: it finds the repository from its own
  path; needs `cargo metadata`).
"""

import json
import os
import shutil
import subprocess
import sys

TARGET = "x86_64-unknown-linux-gnu"
# The repository root: this script's parent directory's parent.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LICENSE_PREFIXES = ("license", "licence", "copying", "notice", "copyright", "unlicense")
SYSTEM_FILES = {
    "glibc": "/usr/share/doc/libc6/copyright",
    "libgcc": "/usr/share/doc/libgcc-s1/copyright",
    "libstdc++": "/usr/share/doc/libstdc++6/copyright",
    "ca-certificates": "/usr/share/doc/ca-certificates/copyright",
}


def linked_packages(meta):
    """Package ids reachable from `sagebrush` through normal (linked) dependencies."""
    nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
    root = next(p["id"] for p in meta["packages"] if p["name"] == "sagebrush")
    seen, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        for dep in nodes[pid]["deps"]:
            if any(k["kind"] is None for k in dep["dep_kinds"]):
                todo.append(dep["pkg"])
    return seen


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    command = ["cargo", "metadata", "--format-version", "1", "--locked", "--filter-platform", TARGET]
    try:
        # Offline first: the build that linked the binary has fetched every crate it uses.
        listed = subprocess.check_output(command + ["--offline"], stderr=subprocess.DEVNULL, cwd=ROOT)
    except subprocess.CalledProcessError:
        listed = subprocess.check_output(command, cwd=ROOT)
    meta = json.loads(listed)
    packages = {p["id"]: p for p in meta["packages"]}
    os.makedirs(os.path.join(out, "sagebrush"), exist_ok=True)
    shutil.copy(os.path.join(ROOT, "LICENSE"), os.path.join(out, "sagebrush", "LICENSE"))
    lines = ["# Third-party software in this image", "", "| crate | version | licence |", "|---|---|---|"]
    for pid in sorted(linked_packages(meta), key=lambda i: (packages[i]["name"], packages[i]["version"])):
        pkg = packages[pid]
        if pkg["source"] is None:  # a workspace crate: the project's own licence
            continue
        name = f'{pkg["name"]}-{pkg["version"]}'
        src = os.path.dirname(pkg["manifest_path"])
        files = [f for f in sorted(os.listdir(src)) if f.lower().startswith(LICENSE_PREFIXES)
                 and os.path.isfile(os.path.join(src, f))]
        if pkg.get("license_file"):
            files.append(pkg["license_file"])
        dest = os.path.join(out, "crates", name)
        os.makedirs(dest, exist_ok=True)
        for f in dict.fromkeys(files):
            shutil.copy(os.path.join(src, f), os.path.join(dest, os.path.basename(f)))
        licence = pkg["license"] or "see files"
        lines.append(f'| {pkg["name"]} | {pkg["version"]} | {licence}{"" if files else " (no licence file in the crate)"} |')
    os.makedirs(os.path.join(out, "system"), exist_ok=True)
    lines += ["", "Linked statically from the build machine: glibc (LGPL-2.1+; its sources and",
              "object files are available from the distribution), libgcc and libstdc++ (GPL-3.0",
              "with the GCC Runtime Library Exception); CA certificates from the distribution's",
              "ca-certificates package (MPL-2.0). Their copyright files are in system/."]
    for name, path in SYSTEM_FILES.items():
        if os.path.isfile(path):
            shutil.copy(path, os.path.join(out, "system", name))
    with open(os.path.join(out, "THIRD-PARTY.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
