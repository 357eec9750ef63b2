#!/usr/bin/env python3
"""Random layered image generator: gen.py SEED OUTDIR [NAME]
Writes OUTDIR/image.docker-archive.tar (RepoTag fuzz/NAME:latest) and OUTDIR/oci (OCI layout, ref latest)
and OUTDIR/layers.txt (a listing of each layer).
Base layer: busybox-static + /bin/sh, /bin/sleep; random layers touch only /r (and below)."""
import hashlib, io, json, os, random, sys, tarfile

SEED = int(sys.argv[1]); OUT = sys.argv[2]; NAME = sys.argv[3] if len(sys.argv) > 3 else f's{SEED}'
R = random.Random(SEED)
FEAT = os.environ.get('FEAT', '')  # e.g. "noparents,shuffle"
ENC = dict(encoding='utf-8', errors='surrogateescape')

def mtime_pax():
    c = R.random()
    if c < 0.1: s = R.randint(-2_000_000_000, -1)
    elif c < 0.15: s = 0
    elif c < 0.2: s = R.randint(2**32, 2**33 - 1)  # beyond 2106 and the 11-digit octal field
    else: s = R.randint(1_000_000_000, 1_800_000_000)
    ns = R.choice([0, 1, 999_999_999, R.randint(0, 999_999_999), R.randint(0, 999) * 1000, 500_000_000])
    return s, ns

def fmt_time(s, ns):
    # PAX: decimal, possibly negative; value = s + ns/1e9
    if s < 0 and ns:
        # -1.5 = s -2 + 0.5 ; write as "-(abs)" form
        tot = -(s * 10**9 + ns)
        return '-%d.%09d' % (tot // 10**9, tot % 10**9)
    return '%d.%09d' % (s, ns)

def rmode(kind):
    if kind == 'dir':
        return R.choice([0o755, 0o755, 0o700, 0o1777, 0o2775, 0o777, 0o555, 0o7755, 0o711, 0o750])
    return R.choice([0o644, 0o644, 0o755, 0o600, 0o4755, 0o2755, 0o6755, 0o1644, 0o0, 0o7777, 0o444, 0o4711, 0o640])

def rid():
    if 'smallids' in FEAT: return R.choice([0, 0, 1, 2, 42, 1000, 65534, 65535])
    return R.choice([0, 0, 0, 1, 2, 42, 1000, 65534, 65535, 100000, 2**31 - 1, 4294967294])

def rname():
    c = R.random()
    if c < 0.55:
        return ''.join(R.choice('abcdefghijklmnopqrstuvwxyz0123456789_-.') for _ in range(R.randint(1, 12))).strip('.') or 'x'
    if c < 0.65:  # long
        return ''.join(R.choice('abcdefghijkLMNOP') for _ in range(R.randint(100, 255)))
    if c < 0.75:  # non-UTF-8
        b = bytes(R.choice([0xff, 0xfe, 0x80, 0xc3, 0xe9, 0x61, 0x62]) for _ in range(R.randint(1, 8)))
        return b.decode('utf-8', 'surrogateescape').replace('/', 'q').replace('\0', 'z')
    if c < 0.82:  # unicode
        return R.choice(['é', 'ü日本', 'ñame', 'Ω', '🙂x'])
    if c < 0.9:
        return R.choice(['a b', 'x~', '#h', '@at', '%p', '+', '-', '..x', 'x..', '.hidden', '.whx', '.wh', 'wh..', 'weird\tname', 'back\\slash'])
    return R.choice(['f', 'g', 'd', 'x', 'y', 'aa', 'ab', 'a', 'b', 'c'])

def rxattrs(kind):
    xs = {}
    if kind not in ('reg', 'dir') or R.random() > 0.3:
        return xs
    for _ in range(R.randint(1, 3)):
        c = R.random()
        val = bytes(R.randrange(256) for _ in range(R.choice([0, 1, 5, 40, 200])))
        if c < 0.5:
            xs['user.' + R.choice(['a', 'b', 'mime_type', 'x' * 60, 'k'])] = val
        elif c < 0.7 and kind == 'reg':
            # vfs_cap_data v2
            perm = R.choice([1 << 10, (1 << 12) | (1 << 13), 0xffffffff])
            xs['security.capability'] = bytes.fromhex('00000002') + perm.to_bytes(4, 'little') + bytes(4) + bytes(8)
        else:
            xs['trusted.' + R.choice(['t', 'foo', 'x.y'])] = val
    return xs

POOL = []
def rcontent():
    if POOL and R.random() < 0.25:
        return R.choice(POOL)
    n = R.choice([0, 0, 1, 2, 63, 64, 65, 100, 127, 128, 4095, 4096, 4097, 8191, 8192, 8193, R.randint(0, 20000), 65536 + 7])
    c = R.random()
    if c < 0.3:
        data = bytes(n)
    elif c < 0.6:
        data = (b'hello world %d\n' % R.randint(0, 99)) * (n // 14 + 1)
        data = data[:n]
    else:
        data = R.randbytes(n)
    POOL.append(data)
    return data

class Layer:
    def __init__(self):
        self.entries = []  # (tarinfo, data)
        self.listing = []
    def add(self, path, kind, mode=None, uid=None, gid=None, data=b'', linkname='', dev=(0, 0), xattrs=None, mt=None):
        ti = tarfile.TarInfo(path)
        ti.type = {'reg': tarfile.REGTYPE, 'dir': tarfile.DIRTYPE, 'lnk': tarfile.SYMTYPE, 'hard': tarfile.LNKTYPE,
                   'fifo': tarfile.FIFOTYPE, 'chr': tarfile.CHRTYPE, 'blk': tarfile.BLKTYPE}[kind]
        ti.mode = rmode(kind) if mode is None else mode
        ti.uid = rid() if uid is None else uid
        ti.gid = rid() if gid is None else gid
        ti.uname = ti.gname = ''
        s, ns = mt if mt else mtime_pax()
        ti.mtime = max(0, min(s, 8**11 - 1))
        ti.pax_headers = {}
        if ns or s < 0 or s >= 8**11:
            ti.pax_headers['mtime'] = fmt_time(s, ns)
        ti.linkname = linkname
        ti.devmajor, ti.devminor = dev
        for k, v in (xattrs or {}).items():
            ti.pax_headers['SCHILY.xattr.' + k] = v.decode('utf-8', 'surrogateescape')
        if kind == 'reg':
            ti.size = len(data)
        self.entries.append((ti, data if kind == 'reg' else None))
        self.listing.append(f'{kind} {path!a} {oct(ti.mode)} {ti.uid}:{ti.gid} {fmt_time(s, ns)} {linkname!a} {dev} {sorted((xattrs or {}).keys())} {len(data) if kind == "reg" else ""}')
        return ti
    def tar(self, base=False):
        if getattr(self, 'raw', None): return self.raw
        bio = io.BytesIO()
        fmt = tarfile.GNU_FORMAT if 'gnu' in FEAT and not base else tarfile.PAX_FORMAT
        ents = self.entries
        if not base and ('dotslash' in FEAT or 'rootentry' in FEAT):
            import copy
            ents = []
            if 'rootentry' in FEAT:
                root = tarfile.TarInfo('./' if 'dotslash' in FEAT else '.')
                root.type = tarfile.DIRTYPE; root.mode = R.choice([0o755, 0o700, 0o1777, 0o555]); root.uid = rid(); root.gid = rid(); root.mtime = 1_500_000_000
                ents.append((root, None))
            for ti, data in self.entries:
                ti = copy.copy(ti); ti.pax_headers = dict(ti.pax_headers)
                if 'dotslash' in FEAT:
                    ti.name = './' + ti.name + ('/' if ti.type == tarfile.DIRTYPE and R.random() < 0.5 else '')
                    if ti.type == tarfile.LNKTYPE: ti.linkname = './' + ti.linkname
                ents.append((ti, data))
        if fmt == tarfile.GNU_FORMAT:
            for ti, data in ents:
                if 'mtime' in ti.pax_headers:
                    ti.mtime = int(float(ti.pax_headers['mtime']) // 1)
        with tarfile.open(fileobj=bio, mode='w', format=fmt, **ENC) as tf:
            for ti, data in ents:
                tf.addfile(ti, io.BytesIO(data) if data is not None else None)
        return bio.getvalue()

def base_layer():
    L = Layer()
    bb = open('/bin/busybox', 'rb').read()
    for d in ['bin', 'dev', 'proc', 'sys', 'etc', 'tmp', 'r']:
        L.add(d, 'dir', mode=0o1777 if d == 'tmp' else 0o755, uid=0, gid=0, mt=(1_600_000_000, 0))
    L.add('bin/busybox', 'reg', mode=0o755, uid=0, gid=0, data=bb, mt=(1_600_000_000, 0))
    for n in ['sh', 'sleep', 'ls', 'cat']:
        L.add('bin/' + n, 'lnk', mode=0o777, uid=0, gid=0, linkname='busybox', mt=(1_600_000_000, 0))
    return L

# ---------------------------------------------------------------- the model of the tree under r/
# tree: path -> dict(kind, mode, uid, gid, mt, xattrs)
tree = {'r': dict(kind='dir', mode=0o755, uid=0, gid=0, mt=(1_600_000_000, 0), xattrs={})}
deleted = []

def children(p):
    pre = p + '/'
    return [q for q in tree if q.startswith(pre)]

def dirs():
    return [p for p, e in tree.items() if e['kind'] == 'dir']

def emit_parents(L, path, done):
    parts = path.split('/')
    if 'noparents' in FEAT and R.random() < 0.7:
        for i in range(1, len(parts)):
            done.add('/'.join(parts[:i]))  # not emitted, but not to be deleted/replaced later in this layer either
        return
    for i in range(1, len(parts)):
        q = '/'.join(parts[:i])
        if q in done or q == '' or q not in tree:
            continue
        e = tree[q]
        done.add(q)
        L.add(q, 'dir', mode=e['mode'], uid=e['uid'], gid=e['gid'], mt=e['mt'], xattrs=e['xattrs'])

def newpath(parent):
    for _ in range(20):
        p = parent + '/' + rname()
        if p not in tree and len(p.encode('utf-8', 'surrogateescape')) < 3500:
            return p
    return None

def gen_layer(li):
    L = Layer()
    done = set()        # paths emitted in this layer
    fresh_files = []    # regular files created in this layer (hardlink targets)
    wh = Layer()        # whiteout entries, emitted first
    body = Layer()
    nops = R.randint(4, 30)
    lower = dict(tree)  # snapshot of lower tree: whiteouts only for these

    def add_node(p, kind=None):
        kind = kind or R.choice(['reg'] * 6 + ['dir'] * 3 + ['lnk'] * 2 + ['fifo', 'chr', 'blk'] + (['hard'] * 2 if [f for f in fresh_files if f in tree] else []))
        emit_parents(body, p, done)
        done.add(p)
        mt = mtime_pax()
        if kind == 'reg':
            xs = rxattrs('reg')
            ti = body.add(p, 'reg', data=rcontent(), xattrs=xs, mt=mt)
            fresh_files.append(p)
        elif kind == 'dir':
            xs = rxattrs('dir')
            ti = body.add(p, 'dir', xattrs=xs, mt=mt)
        elif kind == 'lnk':
            tgt = R.choice(['/bin/busybox', '../x', 'nowhere', '/r', '.', '..', 'a/b/c', 'x' * R.randint(100, 1000), rname()])
            ti = body.add(p, 'lnk', mode=0o777, linkname=tgt, mt=mt)
            xs = {}
        elif kind == 'hard':
            tgt = R.choice([f for f in fresh_files if f in tree])
            ti = body.add(p, 'hard', linkname=tgt, mode=tree[tgt]['mode'], uid=tree[tgt]['uid'], gid=tree[tgt]['gid'], mt=tree[tgt]['mt'])
            tree[p] = dict(tree[tgt])
            return
        elif kind == 'fifo':
            ti = body.add(p, 'fifo', mt=mt); xs = {}
        else:
            ti = body.add(p, kind, dev=R.choice([(1, 3), (1, 5), (7, 0), (4095, 1048575), (0, 1), (136, 0)]), mt=mt); xs = {}
        tree[p] = dict(kind=kind, mode=ti.mode, uid=ti.uid, gid=ti.gid, mt=mt, xattrs=xs)
        if kind in ('lnk', 'fifo', 'chr', 'blk') and 'nohardspecial' not in FEAT: fresh_files.append(p)

    for _ in range(nops):
        op = R.random()
        ds = [d for d in dirs() if d not in deleted_now]
        if op < 0.45:
            parent = R.choice(ds)
            if R.random() < 0.15:  # deep
                for _ in range(R.randint(3, 12)):
                    p = newpath(parent)
                    if not p: break
                    add_node(p, 'dir'); parent = p
            p = newpath(parent)
            if p: add_node(p)
        elif op < 0.6:  # whiteout something of the lower layers
            cands = [q for q in lower if q != 'r' and q in tree and q not in done and not any(q.startswith(x + '/') or q == x for x in deleted_now)]
            if not cands: continue
            q = R.choice(cands)
            par, _, base = q.rpartition('/')
            emit_parents(wh, q, done)
            wh.add(par + '/.wh.' + base, 'reg', mode=0o644, uid=0, gid=0, mt=(0, 0) if R.random() < 0.5 else mtime_pax())
            deleted_now.add(q)
            for c in children(q) + [q]: tree.pop(c, None)
            deleted.append(q)
            if R.random() < 0.3:  # re-create in the same layer
                add_node(q)
        elif op < 0.7:  # opaque dir
            cands = [q for q in lower if lower[q]['kind'] == 'dir' and q in tree and q not in done and q != 'r']
            if not cands: continue
            q = R.choice(cands)
            emit_parents(body, q, done)
            e = tree[q]
            if R.random() < 0.5:
                e = dict(e, mode=rmode('dir'), uid=rid(), mt=mtime_pax()); tree[q] = e
            body.add(q, 'dir', mode=e['mode'], uid=e['uid'], gid=e['gid'], mt=e['mt'], xattrs=e['xattrs'])
            done.add(q)
            body.add(q + '/.wh..wh..opq', 'reg', mode=0o644, uid=0, gid=0, mt=(0, 0))
            for c in children(q): tree.pop(c)
            for _ in range(R.randint(0, 3)):
                p = newpath(q)
                if p: add_node(p)
        elif op < 0.82:  # replace a lower thing by another type (with or without whiteout)
            cands = [q for q in lower if q != 'r' and q in tree and q not in done and not any(q.startswith(x + '/') for x in deleted_now)]
            if not cands: continue
            q = R.choice(cands)
            old = tree[q]['kind']
            kinds = [k for k in ['reg', 'dir', 'lnk', 'fifo'] if k != old]
            if R.random() < 0.5:
                par, _, base = q.rpartition('/')
                emit_parents(wh, q, done)
                wh.add(par + '/.wh.' + base, 'reg', mode=0o644, uid=0, gid=0, mt=(0, 0))
                deleted_now.add(q)
            for c in children(q): tree.pop(c)
            tree.pop(q)
            add_node(q, R.choice(kinds))
            if tree[q]['kind'] == 'dir' and R.random() < 0.5:
                p = newpath(q)
                if p: add_node(p)
        elif op < 0.9:  # re-create something deleted in an earlier layer
            cands = [q for q in deleted if q not in tree and q.rpartition('/')[0] in tree and tree[q.rpartition('/')[0]]['kind'] == 'dir' and q not in done]
            if not cands: continue
            q = R.choice(cands)
            add_node(q)
        elif op < 0.93:
            c = R.random()
            if c < 0.4 and [f for f in fresh_files if f in tree and tree[f]['kind'] == 'reg']:  # same path twice in a layer: the last wins
                q = R.choice([f for f in fresh_files if f in tree and tree[f]['kind'] == 'reg'])
                if any(x[0].linkname == q for x in body.entries): continue
                mt = mtime_pax()
                k = R.choice(['reg', 'reg', 'lnk', 'fifo'])
                if k == 'reg':
                    ti = body.add(q, 'reg', data=rcontent(), xattrs=rxattrs('reg'), mt=mt)
                elif k == 'lnk':
                    ti = body.add(q, 'lnk', mode=0o777, linkname='dup-target', mt=mt)
                else:
                    ti = body.add(q, 'fifo', mt=mt)
                tree[q] = dict(kind=k, mode=ti.mode, uid=ti.uid, gid=ti.gid, mt=mt, xattrs={})
                fresh_files.remove(q)
            elif c < 0.7:  # whiteout of something that does not exist
                par = R.choice(ds)
                p = newpath(par)
                if not p: continue
                emit_parents(wh, p, done)
                wh.add(par + '/.wh.' + p.rpartition('/')[2], 'reg', mode=0o644, uid=0, gid=0, mt=(0, 0))
            elif 'xhard' in FEAT:  # hardlink to a regular file of a lower layer
                cands = [q for q in lower if lower[q]['kind'] == 'reg' and q in tree and q not in done]
                if not cands: continue
                q = R.choice(cands)
                p = newpath(R.choice(ds))
                if not p: continue
                emit_parents(body, p, done)
                done.add(p)
                e = tree[q]
                body.add(p, 'hard', linkname=q, mode=e['mode'], uid=e['uid'], gid=e['gid'], mt=e['mt'])
                tree[p] = dict(e)
                done.add(q)
                for i in range(1, len(q.split('/'))): done.add('/'.join(q.split('/')[:i]))
        else:  # modify metadata/content of an existing lower thing (same type)
            cands = [q for q in lower if q in tree and q not in done and tree[q]['kind'] in ('reg', 'dir') and q != 'r']
            if not cands: continue
            q = R.choice(cands)
            e = tree[q]
            emit_parents(body, q, done)
            done.add(q)
            mt = mtime_pax()
            xs = rxattrs(e['kind']) if R.random() < 0.5 else e['xattrs']
            ti = body.add(q, e['kind'], data=rcontent() if e['kind'] == 'reg' else b'', xattrs=xs, mt=mt)
            tree[q] = dict(e, mode=ti.mode, uid=ti.uid, gid=ti.gid, mt=mt, xattrs=xs)
            if e['kind'] == 'reg': fresh_files.append(q)
    L.entries = wh.entries + body.entries
    L.listing = wh.listing + body.listing
    if 'shuffle' in FEAT:
        # legal reorderings only: whiteouts anywhere (they apply to the lower layers only); a directory's
        # own entry may come after its children; hardlinks stay after their targets
        ents = L.entries
        whs = [x for x in ents if x[0].name.rpartition('/')[2].startswith('.wh.') and not x[0].name.endswith('.wh..wh..opq')]
        rest = [x for x in ents if not any(x is w for w in whs)]
        for w in whs:
            rest.insert(R.randint(0, len(rest)), w)
        # move some dir entries to the end of the layer
        out = []; late = []
        for x in rest:
            (late if x[0].type == tarfile.DIRTYPE and R.random() < 0.3 else out).append(x)
        L.entries = out + late
    return L

DEB = '/var/cache/unionblob-test/images-ub-fixtures-5/export/b.docker-archive.tar'
def debian_layer():
    L = Layer()
    with tarfile.open(DEB) as outer:
        m = json.load(outer.extractfile('manifest.json'))[0]
        data = outer.extractfile(m['Layers'][0]).read()
    L.raw = data
    with tarfile.open(fileobj=io.BytesIO(data), **ENC) as tf:
        for ti in tf:
            n = ti.name.lstrip('./').rstrip('/')
            if not n or not any(n == p or n.startswith(p + '/') for p in ('etc', 'usr/share', 'var')): continue
            if n in ('etc', 'var'): continue
            kind = 'dir' if ti.isdir() else 'reg' if ti.isreg() else 'lnk' if ti.issym() else 'reg' if ti.islnk() else 'fifo' if ti.isfifo() else 'chr' if ti.ischr() else 'blk'
            tree[n] = dict(kind=kind, mode=ti.mode, uid=ti.uid, gid=ti.gid, mt=(int(ti.mtime), 0), xattrs={})
    tree.pop('usr/share', None)
    return L
if 'debian' in FEAT:
    layers = [debian_layer()]
else:
    layers = [base_layer()]
# layer 1: always a good amount of stuff
for li in range(R.randint(2, 4)):
    deleted_now = set()
    layers.append(gen_layer(li))

os.makedirs(OUT, exist_ok=True)
blobs = [l.tar(base=(i == 0)) for i, l in enumerate(layers)]
diff_ids = ['sha256:' + hashlib.sha256(b).hexdigest() for b in blobs]
config = json.dumps({'architecture': 'amd64', 'os': 'linux', 'config': {'Cmd': ['/bin/sh']},
                     'rootfs': {'type': 'layers', 'diff_ids': diff_ids}, 'history': [{'created_by': 'fuzz'} for _ in blobs]}).encode()
cfg_dig = hashlib.sha256(config).hexdigest()
with tarfile.open(os.path.join(OUT, 'image.docker-archive.tar'), 'w', format=tarfile.PAX_FORMAT) as tf:
    def put(name, data):
        ti = tarfile.TarInfo(name); ti.size = len(data); tf.addfile(ti, io.BytesIO(data))
    names = []
    for i, b in enumerate(blobs):
        n = f'{diff_ids[i][7:]}.tar'; names.append(n); put(n, b)
    put(f'{cfg_dig}.json', config)
    put('manifest.json', json.dumps([{'Config': f'{cfg_dig}.json', 'RepoTags': [f'fuzz/{NAME}:latest'], 'Layers': names}]).encode())
# OCI layout (uncompressed layers) for umoci
oci = os.path.join(OUT, 'oci'); os.makedirs(os.path.join(oci, 'blobs', 'sha256'), exist_ok=True)
def blob(data):
    d = hashlib.sha256(data).hexdigest()
    with open(os.path.join(oci, 'blobs', 'sha256', d), 'wb') as f: f.write(data)
    return d
man = {'schemaVersion': 2, 'mediaType': 'application/vnd.oci.image.manifest.v1+json',
       'config': {'mediaType': 'application/vnd.oci.image.config.v1+json', 'digest': 'sha256:' + blob(config), 'size': len(config)},
       'layers': [{'mediaType': 'application/vnd.oci.image.layer.v1.tar', 'digest': 'sha256:' + blob(b), 'size': len(b)} for b in blobs]}
mb = json.dumps(man).encode()
idx = {'schemaVersion': 2, 'manifests': [{'mediaType': 'application/vnd.oci.image.manifest.v1+json', 'digest': 'sha256:' + blob(mb), 'size': len(mb),
                                          'annotations': {'org.opencontainers.image.ref.name': 'latest'}}]}
open(os.path.join(oci, 'index.json'), 'w').write(json.dumps(idx))
open(os.path.join(oci, 'oci-layout'), 'w').write('{"imageLayoutVersion":"1.0.0"}')
with open(os.path.join(OUT, 'layers.txt'), 'w') as f:
    for i, l in enumerate(layers[1:], 1):
        f.write(f'--- layer {i}\n' + '\n'.join(l.listing) + '\n')
