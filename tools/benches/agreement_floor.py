#!/usr/bin/env python3
"""How fragile top-1 agreement is on a folder of photos: the dense model's confidence, and the
agreement (and KL) of small, known weight perturbations — float16, uniform 8/10-bit per tensor
and per channel, 0.1% relative noise — with onnxruntime. Explains why agreement goals on unsure
photos need near-float16 fidelity. Diagnostic for issue 6 (numbers in its session-4 note).

    target/bench/venv/bin/python tools/benches/agreement_floor.py MODEL.onnx PHOTO_DIR
    (needs onnx, onnxruntime, numpy, pillow; 4 views per photo, first 60 photos, seed 0)
"""
import onnx, numpy as np, onnxruntime as ort, glob, sys, copy
from onnx import numpy_helper
from PIL import Image
rng=np.random.default_rng(0)
m=onnx.load(sys.argv[1])
def prep(img):
    w,h=img.size; s=256/min(w,h); img=img.resize((max(1,round(w*s)),max(1,round(h*s))),Image.BICUBIC)
    w,h=img.size; l=(w-224)//2; t=(h-224)//2; img=img.crop((l,t,l+224,t+224))
    a=(np.asarray(img,dtype=np.float32)-127)/128; return a.transpose(2,0,1)[None]
views=[]
for f in sorted(glob.glob(sys.argv[2] + '/*'))[:60]:
    img=Image.open(f).convert('RGB'); img.thumbnail((1024,1024))
    views.append(prep(img))
    for v in range(3):
        w,h=img.size; a=rng.uniform(0.08,1)*w*h; r=np.exp(rng.uniform(np.log(.75),np.log(4/3)))
        cw=int(min(w,max(224,np.sqrt(a*r)))); ch=int(min(h,max(224,np.sqrt(a/r))))
        x=rng.integers(0,w-cw+1); y=rng.integers(0,h-ch+1); c=img.crop((x,y,x+cw,y+ch))
        if rng.random()<.5: c=c.transpose(Image.FLIP_LEFT_RIGHT)
        views.append(prep(c))
X=np.concatenate(views)
def run(model):
    so=ort.SessionOptions(); so.intra_op_num_threads=2
    s=ort.InferenceSession(model.SerializeToString(),so)
    return np.concatenate([s.run(None,{'input':X[i:i+1]})[0] for i in range(len(X))])
T=run(m)
def agree(S):
    p=np.exp(T-T.max(1,keepdims=True)); p/=p.sum(1,keepdims=True)
    q=np.exp(S-S.max(1,keepdims=True)); q/=q.sum(1,keepdims=True)
    kl=(p*np.log(p/np.maximum(q,1e-30))).sum(1).mean()
    return (T.argmax(1)==S.argmax(1)).mean(), kl
p=np.exp(T-T.max(1,keepdims=True)); p/=p.sum(1,keepdims=True)
srt=np.sort(p,1); print('views',len(X),'median top1 prob',np.median(srt[:,-1]),'median margin',np.median(srt[:,-1]-srt[:,-2]))
def variant(fn):
    mm=copy.deepcopy(m)
    for init in mm.graph.initializer:
        a=numpy_helper.to_array(init)
        if a.ndim in (2,4) and a.size>=256:
            init.CopyFrom(numpy_helper.from_array(fn(a).astype(np.float32),init.name))
    return agree(run(mm))
def uq(a,bits,axis=None):
    if axis is None: lo,hi=a.min(),a.max()
    else:
        r=tuple(i for i in range(a.ndim) if i!=axis); lo=a.min(r,keepdims=True); hi=a.max(r,keepdims=True)
    n=2**bits-1; s=(hi-lo)/n; s=np.where(s==0,1,s); return np.round((a-lo)/s)*s+lo
print('f16',variant(lambda a:a.astype(np.float16).astype(np.float32)))
for b in (8,10):
    print('uniform per-tensor',b,variant(lambda a:uq(a,b)))
    print('uniform per-channel',b,variant(lambda a:uq(a,b,0)))
print('noise 1e-3 rel',variant(lambda a:a*(1+1e-3*rng.standard_normal(a.shape))))
