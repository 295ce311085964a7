#!/usr/bin/env python3
"""A cargo registry of .crate files, served over HTTP on 127.0.0.1 (the sparse protocol).

    registry.py DIR PORT_FILE CRATE_FILE...

Writes the index (config.json and one file per crate, entries made from each package's
own normalized Cargo.toml) and the downloads under DIR, binds 127.0.0.1 on a free port,
writes the port to PORT_FILE once it serves, and serves until killed. Dependencies the
packages take from crates.io say so in the index (`registry`), so cargo fetches those from
crates.io and only our crates from here: what a user sees once they are published.

Used by .ci/install, which installs meshrpc-cli and builds a new app with
`cargo add meshrpc` from this registry.
"""

import hashlib
import http.server
import io
import json
import os
import sys
import tarfile
import tomllib

CRATES_IO = "https://github.com/rust-lang/crates.io-index"


def index_path(name: str) -> str:
    """Where the sparse index keeps a crate's entries (cargo's layout)."""
    n = name.lower()
    if len(n) <= 2:
        return f"{len(n)}/{n}"
    if len(n) == 3:
        return f"3/{n[0]}/{n}"
    return f"{n[:2]}/{n[2:4]}/{n}"


def deps_of(manifest: dict, ours: set) -> list:
    """The index's dependency entries: normal and build dependencies, every target."""
    tables = [(manifest, None)]
    for target, table in manifest.get("target", {}).items():
        tables.append((table, target))
    deps = []
    for table, target in tables:
        for section, kind in (("dependencies", "normal"), ("build-dependencies", "build")):
            for key, spec in table.get(section, {}).items():
                if isinstance(spec, str):
                    spec = {"version": spec}
                package = spec.get("package", key)
                deps.append({
                    "name": key,
                    "req": spec.get("version", "*"),
                    "features": spec.get("features", []),
                    "optional": spec.get("optional", False),
                    "default_features": spec.get("default-features", True),
                    "target": target,
                    "kind": kind,
                    # Ours come from this registry (null: the same one); the rest from crates.io.
                    "registry": None if package in ours else CRATES_IO,
                    "package": package if package != key else None,
                })
    return deps


def for_this_registry(data: bytes, ours: set, index: str) -> bytes:
    """The .crate with its dependencies on our crates pointed at this registry, as cargo
    writes them when it publishes to a registry other than crates.io (`registry-index`):
    `cargo install` builds a package from its own manifest, and a dependency without it
    means crates.io."""
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar, tarfile.open(fileobj=out, mode="w:gz") as new:
        for member in tar.getmembers():
            content = tar.extractfile(member).read() if member.isfile() else None
            if member.name.count("/") == 1 and member.name.endswith("/Cargo.toml"):
                manifest = tomllib.loads(content.decode())
                lines = []
                for line in content.decode().splitlines():
                    lines.append(line)
                    name = line.strip().strip("[]").rsplit(".", 1)[-1] if line.startswith("[") else None
                    if name and "dependencies." in line:
                        tables = [manifest] + list(manifest.get("target", {}).values())
                        spec = next((t[s][name] for t in tables for s in ("dependencies", "build-dependencies")
                                     if name in t.get(s, {})), {})
                        package = spec.get("package", name) if isinstance(spec, dict) else name
                        if package in ours:
                            lines.append(f'registry-index = "{index}"')
                content = ("\n".join(lines) + "\n").encode()
                member.size = len(content)
            new.addfile(member, io.BytesIO(content) if content is not None else None)
    return out.getvalue()


def entry(data: bytes, ours: set) -> tuple:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = next(m for m in tar.getmembers() if m.name.count("/") == 1 and m.name.endswith("/Cargo.toml"))
        manifest = tomllib.loads(tar.extractfile(member).read().decode())
    package = manifest["package"]
    line = {
        "name": package["name"],
        "vers": package["version"],
        "deps": deps_of(manifest, ours),
        "cksum": hashlib.sha256(data).hexdigest(),
        "features": {},
        # Features may name optional dependencies (`dep:`): version 2 entries.
        "features2": manifest.get("features", {}),
        "v": 2,
        "yanked": False,
        "links": package.get("links"),
        "rust_version": package.get("rust-version"),
    }
    return package["name"], package["version"], line, data


def main() -> None:
    root, port_file, crates = sys.argv[1], sys.argv[2], sys.argv[3:]
    names = {os.path.basename(c).rsplit("-", 1)[0] for c in crates}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), None)
    port = server.server_address[1]
    os.makedirs(os.path.join(root, "index"), exist_ok=True)
    with open(os.path.join(root, "index", "config.json"), "w") as f:
        json.dump({"dl": f"http://127.0.0.1:{port}/crates/{{crate}}-{{version}}.crate", "api": None}, f)
    lines = {}
    index = f"sparse+http://127.0.0.1:{port}/index/"
    for crate in crates:
        with open(crate, "rb") as f:
            data = for_this_registry(f.read(), names, index)
        name, version, line, data = entry(data, names)
        lines.setdefault(name, []).append(json.dumps(line))
        os.makedirs(os.path.join(root, "crates"), exist_ok=True)
        with open(os.path.join(root, "crates", f"{name}-{version}.crate"), "wb") as f:
            f.write(data)
    for name, entries in lines.items():
        path = os.path.join(root, "index", index_path(name))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write("\n".join(entries) + "\n")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=root, **kwargs)

        def log_message(self, *args):
            pass

    server.RequestHandlerClass = Quiet
    with open(port_file + ".tmp", "w") as f:
        f.write(str(port))
    os.rename(port_file + ".tmp", port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
