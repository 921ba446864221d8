#!/usr/bin/env python3
"""Writes OCI image archives (oci-layout, index.json, blobs) for `ctr images import`, without an
image builder: the node's own small images and the images that share one Debian root filesystem.

usage: oci_archive.py ROOTFS_DIR IMAGE_REF OUT.tar [ENTRYPOINT ...]   one image, one layer
       oci_archive.py SPEC.json OUT.tar                                 several images
SPEC.json: {"images": [{"ref": "...", "layers": [DIR_OR_TAR, ...], "config": {OCI config}}]}.
Layers shared by several images are stored once. A directory becomes a reproducible tar (sorted
names, mtime 0, root-owned), so the same input gives the same digest; a tar file is used as is."""
import hashlib
import io
import json
import os
import sys
import tarfile


def layer_tar(root: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(dirnames) + sorted(filenames):
                path = os.path.join(dirpath, name)
                info = tar.gettarinfo(path, arcname=os.path.relpath(path, root))
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                if info.isfile():
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
    return buf.getvalue()


def file_digest(path: str) -> tuple:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
            size += len(chunk)
    return "sha256:" + h.hexdigest(), size


def write(images: list, out: str) -> None:
    """images: [(ref, [layer dir or tar path], config dict)]."""
    blobs = {}  # digest -> bytes or a file path
    manifests = []

    def blob(data: bytes) -> dict:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"digest": digest, "size": len(data)}

    for ref, layers, config in images:
        descs, diff_ids = [], []
        for layer in layers:
            if os.path.isdir(layer):
                desc = blob(layer_tar(layer))
            else:
                digest, size = file_digest(layer)
                blobs[digest] = layer
                desc = {"digest": digest, "size": size}
            descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar", **desc})
            diff_ids.append(desc["digest"])
        image_config = {
            "architecture": "amd64",
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **blob(json.dumps(image_config, sort_keys=True).encode())},
            "layers": descs,
        }
        manifests.append({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            **blob(json.dumps(manifest, sort_keys=True).encode()),
            "annotations": {"org.opencontainers.image.ref.name": ref, "io.containerd.image.name": ref},
        })
    index = {"schemaVersion": 2, "manifests": manifests}
    with tarfile.open(out, "w") as tar:
        def add(name: str, data) -> None:
            if isinstance(data, str):
                tar.add(data, arcname=name)
                return
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", json.dumps(index).encode())
        for digest, data in sorted(blobs.items()):
            add("blobs/sha256/" + digest.split(":", 1)[1], data)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1].endswith(".json"):
        with open(sys.argv[1]) as f:
            spec = json.load(f)
        write([(i["ref"], i["layers"], i.get("config", {})) for i in spec["images"]], sys.argv[2])
        return
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    root, ref, out, entrypoint = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    config = {"Entrypoint": entrypoint or None, "Env": ["PATH=/bin:/usr/bin:/sbin:/usr/sbin"]}
    write([(ref, [root], config)], out)


if __name__ == "__main__":
    main()
