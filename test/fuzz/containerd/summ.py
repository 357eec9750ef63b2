import json,collections,sys
c=collections.Counter(); n=0
for l in open(sys.argv[1]):
    r=json.loads(l); n+=1
    if r['errs']: print('ERR',r['seed'],str(r['errs'])[:250])
    for k in ('ub_alone','other','ctrd_alone'):
        for x in r['cls'][k]:
            field=[w for w in x.split() if w.endswith(':') and w[:-1] in ('type','mode','uid','gid','size','sha256','target','rdev','xattrs','hardlinks','mtime')]
            c[(k,field[0] if field else '?')]+=1
            if k!='ctrd_alone': print(r['seed'],k,x[:300])
print(n,c)
