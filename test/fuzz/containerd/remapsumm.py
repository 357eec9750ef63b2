import json,sys,re
def interesting(l):
    if ': hardlinks:' in l or ': mtime:' in l: return False
    m = re.search(r': mode: \S+=(\d+) \S+=(\d+)$', l)
    if m and (int(m.group(1),8) & ~0o6000) == (int(m.group(2),8) & ~0o6000): return False
    if ': xattrs:' in l:
        a, b = l.split(': xattrs: ')[1].split(' ub-remap-labels=')
        a = a.split('=', 1)[1]
        norm = lambda s: sorted(x for x in re.split(r',(?=[a-z]+\.)', s) if not x.startswith('trusted.') and not x.startswith('security.capability') and x != '(none)')
        if norm(a) == norm(b): return False
    return True
n=0
for l in open(sys.argv[1]):
    r=json.loads(l); n+=1
    e=r['errs']
    for k in ('remap',):
        if k in e: print(r['seed'],'REMAP-ERR',e[k][:300])
    for k in ('remapdiff','remapdiff3'):
        for x in e.get(k, []):
            if interesting(x) and not x.startswith('run:'): print(r['seed'],k,x[:350])
    for k in ('overlayfs','unionblob'):
        if k in e: print(r['seed'],'ERR',k,e[k][:200])
    for x in r['cls']['ub_alone']+r['cls']['other']: print(r['seed'],'CLS',x[:300])
print(n,'runs')
