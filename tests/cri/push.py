#!/usr/bin/env python3
"""Push the OCI layouts made by mkcriimages.py to a plain-HTTP registry (the OCI distribution API:
monolithic blob uploads, then the manifest), checking that the registry answers with the layout's digest.

Usage: push.py IMAGES_DIR REGISTRY     e.g. push.py /var/cache/cm-tools/cri-images 127.0.0.1:5000
Pushes every row of IMAGES_DIR/images.tsv to REGISTRY/<repository-path>:<tag>.
"""
import json
import os
import sys
import urllib.error
import urllib.request

MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def request(method, url, data=None, headers=None):
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def push_blob(reg, repo, layout, desc):
    digest = desc["digest"]
    status, _, _ = request("HEAD", "http://%s/v2/%s/blobs/%s" % (reg, repo, digest))
    if status == 200:
        return
    status, headers, body = request("POST", "http://%s/v2/%s/blobs/uploads/" % (reg, repo))
    if status != 202:
        sys.exit("push.py: starting an upload to %s failed: %s %s" % (repo, status, body[:300]))
    location = headers["Location"]
    if location.startswith("/"):
        location = "http://%s%s" % (reg, location)
    with open(os.path.join(layout, "blobs", "sha256", digest.split(":", 1)[1]), "rb") as f:
        data = f.read()
    sep = "&" if "?" in location else "?"
    status, _, body = request("PUT", "%s%sdigest=%s" % (location, sep, digest), data,
                              {"Content-Type": "application/octet-stream"})
    if status != 201:
        sys.exit("push.py: upload of %s to %s failed: %s %s" % (digest, repo, status, body[:300]))


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    images, reg = sys.argv[1], sys.argv[2]
    n = 0
    for line in open(os.path.join(images, "images.tsv")):
        if not line.strip() or line.startswith("#"):
            continue
        layout, tag, dest, _names, digest = line.rstrip("\n").split("\t")
        layout = os.path.join(images, layout)
        repo, ref = dest.rsplit(":", 1)
        index = json.load(open(os.path.join(layout, "index.json")))
        desc = next(m for m in index["manifests"]
                    if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag)
        with open(os.path.join(layout, "blobs", "sha256", desc["digest"].split(":", 1)[1]), "rb") as f:
            manifest = f.read()
        for d in [json.loads(manifest)["config"]] + json.loads(manifest)["layers"]:
            push_blob(reg, repo, layout, d)
        status, headers, body = request("PUT", "http://%s/v2/%s/manifests/%s" % (reg, repo, ref), manifest,
                                        {"Content-Type": MANIFEST})
        if status != 201:
            sys.exit("push.py: manifest %s failed: %s %s" % (dest, status, body[:300]))
        got = headers.get("Docker-Content-Digest")
        if got != digest or desc["digest"] != digest:
            sys.exit("push.py: %s/%s: registry has %r, layout has %s" % (reg, dest, got, digest))
        n += 1
    print("%d references pushed to %s" % (n, reg))


if __name__ == "__main__":
    main()
