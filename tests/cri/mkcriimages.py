#!/usr/bin/env python3
"""Build the Linux test images that critest (cri-tools v1.37.0) pulls, offline, as OCI
image layouts.

Nothing is downloaded. Every image is built from a static busybox binary plus a few tiny
static C programs from src/ (compiled here with gcc -static):
  src/websrv.c  HTTP server that stands in for nginx / Apache httpd (pid file, nginx-like
                process title, startup banner, SIGTERM/SIGQUIT/SIGWINCH handling)
  src/nnp.c     prints "Effective uid: N" (installed setuid root in the nonewprivs image)
  src/pause.c   sandbox pause process

Usage: mkcriimages.py [--out DIR] [--busybox PATH] [--cc gcc]
  --busybox  default: $CM_TOOLS/busybox-defconfig/busybox (the defconfig static build of
             build-busybox.sh; CM_TOOLS defaults to /var/cache/cm-tools)
  --out      default: $CM_TOOLS/cri-images
Writes one OCI layout per image under OUT and OUT/images.tsv:
  layout-dir <TAB> tag-in-layout <TAB> repository-path:tag <TAB> names critest uses <TAB> digest
push.py pushes each to REGISTRY/<repository-path>:<tag>; a cm-server started with
--registry-mirror registry.k8s.io=http://REGISTRY (and k8s.gcr.io, gcr.io, docker.io) then
resolves the names critest uses (e.g. registry.k8s.io/e2e-test-images/busybox:1.29-2 ->
REGISTRY/e2e-test-images/busybox:1.29-2).

The layouts are deterministic (fixed mtimes, gzip mtime 0), so digests are stable across
rebuilds with the same inputs.
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile

KIT = os.path.dirname(os.path.abspath(__file__))
TOOLS = os.environ.get("CM_TOOLS", "/var/cache/cm-tools")
MTIME = 1700000000  # fixed timestamp for every tar entry
CREATED = "2023-11-14T22:13:20Z"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# /etc/passwd and /etc/group as in the official busybox images
PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
"""
GROUP = """root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
kmem:x:9:
wheel:x:10:root
cdrom:x:11:
dialout:x:18:
floppy:x:19:
video:x:28:
audio:x:29:
tape:x:32:
www-data:x:33:
operator:x:37:
utmp:x:43:
plugdev:x:46:
staff:x:50:
lock:x:54:
netdev:x:82:
users:x:100:
nogroup:x:65534:
"""
SHADOW = "".join(l.split(":")[0] + ":*:10933:0:99999:7:::\n" for l in PASSWD.splitlines())


# ---------------------------------------------------------------- OCI helpers
def blob(out, data, media):
    d = hashlib.sha256(data).hexdigest()
    p = os.path.join(out, "blobs", "sha256")
    os.makedirs(p, exist_ok=True)
    with open(os.path.join(p, d), "wb") as f:
        f.write(data)
    return {"mediaType": media, "digest": "sha256:" + d, "size": len(data)}


def ti(name, typ=tarfile.REGTYPE, size=0, mode=0o644, link=""):
    t = tarfile.TarInfo(name)
    t.type, t.size, t.mode, t.linkname, t.mtime = typ, size, mode, link, MTIME
    t.uid = t.gid = 0
    t.uname = t.gname = "root"
    return t


def owned(t, uid, gid):
    t.uid, t.gid, t.uname, t.gname = uid, gid, "", ""
    return t


def F(name, data, mode=0o644):
    if isinstance(data, str):
        data = data.encode()
    return (ti(name, size=len(data), mode=mode), data)


def D(name, mode=0o755):
    return (ti(name, tarfile.DIRTYPE, mode=mode), None)


def HL(name, target):
    return (ti(name, tarfile.LNKTYPE, link=target, mode=0o755), None)


def tar_layer(entries):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
        for info, data in entries:
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    raw = raw.getvalue()
    return gzip.compress(raw, 6, mtime=0), "sha256:" + hashlib.sha256(raw).hexdigest()


def write_layout(out, layers, config, tags, labels=None, history=None):
    """layers: list of entry lists. config: OCI image config 'config' section."""
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out)
    descs, diffs = [], []
    for entries in layers:
        gz, diff = tar_layer(entries)
        descs.append(blob(out, gz, "application/vnd.oci.image.layer.v1.tar+gzip"))
        diffs.append(diff)
    cfg_section = {"Env": [PATH_ENV]}
    cfg_section.update(config)
    if labels:
        cfg_section["Labels"] = labels
    hist = [{"created": CREATED, "created_by": h} for h in (history or [])]
    cfg = {"created": CREATED, "architecture": "amd64", "os": "linux", "config": cfg_section,
           "rootfs": {"type": "layers", "diff_ids": diffs}, "history": hist}
    c = blob(out, json.dumps(cfg, sort_keys=True).encode(), "application/vnd.oci.image.config.v1+json")
    man = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
           "config": c, "layers": descs}
    m = blob(out, json.dumps(man, sort_keys=True).encode(), "application/vnd.oci.image.manifest.v1+json")
    m["platform"] = {"architecture": "amd64", "os": "linux"}
    idx = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}
    for tag in tags:
        e = dict(m)
        e["annotations"] = {"org.opencontainers.image.ref.name": tag}
        idx["manifests"].append(e)
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump(idx, f)
    with open(os.path.join(out, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    return m["digest"], c["digest"]


# ---------------------------------------------------------------- content
def compile_tools(cc, build):
    os.makedirs(build, exist_ok=True)
    bins = {}
    for name in ("websrv", "nnp", "pause"):
        src = os.path.join(KIT, "src", name + ".c")
        dst = os.path.join(build, name)
        if not os.path.exists(dst) or os.path.getmtime(dst) < os.path.getmtime(src):
            subprocess.run([cc, "-static", "-Os", "-s", "-Wall", "-o", dst, src], check=True)
        with open(dst, "rb") as f:
            bins[name] = f.read()
    return bins


def busybox_rootfs(bb_path):
    with open(bb_path, "rb") as f:
        bb = f.read()
    applets = subprocess.run([bb_path, "--list"], capture_output=True, text=True, check=True).stdout.split()
    e = [D("bin"), D("dev"), D("etc"), D("home"), D("root", 0o700), D("tmp", 0o1777), D("usr"),
         D("usr/sbin"), D("var"), D("var/spool"), D("var/spool/mail"), D("var/www")]
    e.append(F("bin/busybox", bb, 0o755))
    # hard links like the official image (busybox --install /bin): masking /bin/ls then
    # masks only ls, not every applet
    for a in sorted(set(applets)):
        if a not in ("busybox",) and "/" not in a:
            e.append(HL("bin/" + a, "bin/busybox"))
    e += [F("etc/passwd", PASSWD), F("etc/group", GROUP), F("etc/shadow", SHADOW, 0o640)]
    return e, applets


def websrv_layer(bins, binpath, conf, extra_dirs=(), extra=()):
    dirs = []
    parts = binpath.split("/")[:-1]
    for i in range(1, len(parts) + 1):
        dirs.append("/".join(parts[:i]))
    ent = [D(d) for d in sorted(set(dirs) | set(extra_dirs))]
    ent.append(F(binpath, bins["websrv"], 0o755))
    ent.append(F("etc/websrv.conf", "".join("%s=%s\n" % kv for kv in conf.items())))
    ent += list(extra)
    return ent


INDEX_HTML = """<!DOCTYPE html>
<html><head><title>Welcome to nginx!</title></head>
<body><h1>Welcome to nginx!</h1><p>(cm websrv standing in for nginx)</p></body></html>
"""


def build_all(out, bb_path, bins):
    base, applets = busybox_rootfs(bb_path)
    bbver = subprocess.run([bb_path], capture_output=True, text=True).stdout.splitlines()[0]
    hist_base = ["crikit: busybox rootfs (%s, %d applets as hard links)" % (bbver, len(applets))]
    sh = {"Cmd": ["sh"]}
    rows = []  # (layout, tag, repo:tag, names)

    def img(layout, refs, layers, config, labels=None, history=(), names=()):
        tags = [t for _, t in refs]
        md, cd = write_layout(os.path.join(out, layout), layers, config, tags, labels,
                              hist_base + list(history))
        for repo, tag in refs:
            rows.append((layout, tag, "%s:%s" % (repo, tag), ",".join(names), md))
        print("%-34s %s  %s" % (layout, md[:19], " ".join("%s:%s" % r for r in refs)))

    E2E = "e2e-test-images/"
    STG = "k8s-staging-cri-tools/"

    # registry.k8s.io/e2e-test-images/busybox:1.29-2: the default test container image
    img("busybox", [(E2E + "busybox", "1.29-2")], [base], sh,
        names=["registry.k8s.io/e2e-test-images/busybox:1.29-2"])

    # nginx stand-in: port 80, /var/run/nginx.pid, comm "nginx", cmdline with "master process"
    nginx_conf = {"port": "80", "title": "nginx: master process nginx -g daemon off;",
                  "pidfile": "/var/run/nginx.pid", "body": "/usr/share/nginx/html/index.html"}
    nginx_extra = [D("var/run"), D("var/cache"), D("var/cache/nginx"), D("var/log"), D("var/log/nginx"),
                   D("etc/nginx"), D("usr/share"), D("usr/share/nginx"), D("usr/share/nginx/html"),
                   F("usr/share/nginx/html/index.html", INDEX_HTML)]
    nginx_cfg = {"Cmd": ["nginx", "-g", "daemon off;"], "ExposedPorts": {"80/tcp": {}},
                 "StopSignal": "SIGTERM"}
    img("nginx", [(E2E + "nginx", "1.14-2")],
        [base, websrv_layer(bins, "usr/sbin/nginx", nginx_conf, extra=nginx_extra)], nginx_cfg,
        history=["crikit: websrv as /usr/sbin/nginx on :80"],
        names=["registry.k8s.io/e2e-test-images/nginx:1.14-2"])

    hn_conf = dict(nginx_conf, port="12003")
    img("hostnet-nginx", [(STG + "hostnet-nginx-amd64", "latest")],
        [base, websrv_layer(bins, "usr/sbin/nginx", hn_conf, extra=nginx_extra)],
        dict(nginx_cfg, ExposedPorts={"80/tcp": {}}, StopSignal="SIGQUIT"),
        history=["crikit: websrv as /usr/sbin/nginx on :12003 (images/hostnet-nginx)"],
        names=["gcr.io/k8s-staging-cri-tools/hostnet-nginx-amd64"])

    # httpd stand-in: log line containing "httpd", port 80
    httpd_conf = {"port": "80", "pidfile": "/usr/local/apache2/logs/httpd.pid",
                  "banner": "AH00558: httpd: crikit websrv standing in for Apache/2.4.39, listening on port 80",
                  "body": "/usr/local/apache2/htdocs/index.html"}
    httpd_extra = [D("usr/local/apache2/logs"), D("usr/local/apache2/htdocs"), D("usr/local/bin"),
                   F("usr/local/apache2/htdocs/index.html", "<html><body><h1>It works!</h1></body></html>\n"),
                   F("usr/local/bin/httpd-foreground",
                     "#!/bin/sh\nset -e\nrm -f /usr/local/apache2/logs/httpd.pid\nexec httpd -DFOREGROUND \"$@\"\n",
                     0o755)]
    img("httpd", [(E2E + "httpd", "2.4.39-4")],
        [base, websrv_layer(bins, "usr/local/apache2/bin/httpd", httpd_conf, extra=httpd_extra)],
        {"Env": ["PATH=/usr/local/apache2/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                 "HTTPD_PREFIX=/usr/local/apache2"],
         "Cmd": ["httpd-foreground"], "WorkingDir": "/usr/local/apache2",
         "ExposedPorts": {"80/tcp": {}}, "StopSignal": "SIGWINCH"},
        history=["crikit: websrv as /usr/local/apache2/bin/httpd on :80"],
        names=["registry.k8s.io/e2e-test-images/httpd:2.4.39-4"])

    # nonewprivs: setuid-root binary printing the effective uid
    img("nonewprivs", [(E2E + "nonewprivs", "1.3")],
        [base, [D("usr"), D("usr/local"), D("usr/local/bin"), F("usr/local/bin/nnp", bins["nnp"], 0o4755)]],
        {"Entrypoint": ["/usr/local/bin/nnp"]},
        history=["crikit: /usr/local/bin/nnp mode 4755 root:root"],
        names=["registry.k8s.io/e2e-test-images/nonewprivs:1.3"])

    # images/image-user: busybox + USER
    for name, user in (("test-image-user-uid", "1002"), ("test-image-user-username", "www-data"),
                       ("test-image-user-uid-group", "1003:1004"),
                       ("test-image-user-username-group", "www-data:1004")):
        img(name, [(STG + name, "latest")], [base], dict(sh, User=user),
            history=["USER " + user], names=["gcr.io/k8s-staging-cri-tools/" + name])

    # images/image-predefined-group: default-user(1000) in group-defined-in-image(50000), USER 1000
    pg_passwd = PASSWD + "default-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh\n"
    pg_group = GROUP + "default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n"
    pg_shadow = SHADOW + "default-user:!:19000:0:99999:7:::\n"
    img("test-image-predefined-group", [(STG + "test-image-predefined-group", "latest")],
        [base, [D("etc"), F("etc/passwd", pg_passwd), F("etc/group", pg_group),
                F("etc/shadow", pg_shadow, 0o640), D("home"),
                (owned(ti("home/default-user", tarfile.DIRTYPE, mode=0o2755), 1000, 1000), None)]],
        dict(sh, User="1000"),
        history=["adduser -u 1000 -D default-user && addgroup -g 50000 group-defined-in-image && "
                 "addgroup default-user group-defined-in-image", "USER 1000"],
        names=["gcr.io/k8s-staging-cri-tools/test-image-predefined-group"])

    # images/image-test: busybox + an empty file named after the image/tag
    def test_image(layout, marker, refs, names):
        img(layout, refs, [base, [F(marker, b"")]], sh, history=["ADD %s %s" % (marker, marker)], names=names)

    for n in ("test-image-1", "test-image-2", "test-image-3", "test-image-latest"):
        test_image(n, n, [(STG + n, "latest")], ["gcr.io/k8s-staging-cri-tools/%s:latest" % n])
    test_image("test-image-digest", "test-image-digest", [(STG + "test-image-digest", "latest")],
               ["(spec pins upstream digest sha256:9700f9a2...; cannot be reproduced offline)"])
    test_image("test-image-tags", "same-image", [(STG + "test-image-tags", t) for t in ("1", "2", "3")],
               ["gcr.io/k8s-staging-cri-tools/test-image-tags:1,2,3"])
    test_image("test-image-tag-test", "test", [(STG + "test-image-tag", "test")],
               ["gcr.io/k8s-staging-cri-tools/test-image-tag:test"])
    test_image("test-image-tag-all", "all", [(STG + "test-image-tag", "all")],
               ["gcr.io/k8s-staging-cri-tools/test-image-tag:all"])

    # pause: registry.k8s.io/pause:3.9 == k8s.gcr.io/pause:3.9 (same repository path "pause")
    pause_layer = [F("pause", bins["pause"], 0o755)]
    pause_cfg = {"Entrypoint": ["/pause"], "User": "65535:65535", "WorkingDir": "/"}
    img("pause", [("pause", "3.9")], [pause_layer], dict(pause_cfg, Env=[PATH_ENV]),
        history=["crikit: static /pause"], names=["registry.k8s.io/pause:3.9", "k8s.gcr.io/pause:3.9"])
    # sandbox image for containerd's sandbox_image: same binary, distinct image ID (label),
    # so it never shows up as an extra repo tag of pause:3.9 in the image specs
    img("pause-sandbox", [("crikit/pause", "sandbox")], [pause_layer], dict(pause_cfg, Env=[PATH_ENV]),
        labels={"io.crikit.role": "sandbox"}, history=["crikit: static /pause (sandbox image)"],
        names=["127.0.0.1:5000/crikit/pause:sandbox (containerd sandbox_image)"])
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(TOOLS, "cri-images"))
    ap.add_argument("--busybox", default=os.path.join(TOOLS, "busybox-defconfig", "busybox"))
    ap.add_argument("--cc", default="gcc")
    a = ap.parse_args()
    bb = a.busybox
    if not os.path.exists(bb):
        sys.exit("mkcriimages.py: %s missing: run tests/cri/build-busybox.sh" % bb)
    applets = subprocess.run([bb, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for need in ("sh", "top", "sleep", "pgrep", "ipcs", "pidof", "id", "netstat", "ping", "brctl", "hostname"):
        if need not in applets:
            print("warning: busybox %s has no '%s' applet; specs using it will fail" % (bb, need), file=sys.stderr)
    bins = compile_tools(a.cc, os.path.join(a.out, "build"))
    os.makedirs(a.out, exist_ok=True)
    rows = build_all(a.out, bb, bins)
    with open(os.path.join(a.out, "images.tsv"), "w") as f:
        f.write("# layout\ttag\trepository:tag (under the registry)\tnames critest uses\tmanifest digest\n")
        for r in rows:
            f.write("\t".join(r) + "\n")
    print("wrote %d image references in %d layouts to %s" % (len(rows), len({r[0] for r in rows}), a.out))


if __name__ == "__main__":
    main()
