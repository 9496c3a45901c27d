#!/usr/bin/env python3
"""Rate against distortion of k-means (Lloyd, quantile init) and of a uniform grid on a model's
largest layers: entropy of the indices (bits/weight, what an entropy coder approaches) and
relative MSE. Why `nnzip compress --quantizer uniform` (issue 6, session-4 note).

    target/bench/venv/bin/python tools/benches/quantizer_rd.py ../shared/models/efficientnet_lite0.onnx
"""
import onnx, numpy as np
from onnx import numpy_helper
import sys
m=onnx.load(sys.argv[1])
W={i.name:numpy_helper.to_array(i) for i in m.graph.initializer}
def H(idx):
    _,c=np.unique(idx,return_counts=True); p=c/c.sum(); return -(p*np.log2(p)).sum()
def lloyd(w,k,it=30):
    c=np.quantile(w,(np.arange(k)+.5)/k)
    for _ in range(it):
        mid=(c[1:]+c[:-1])/2; idx=np.searchsorted(mid,w)
        s=np.bincount(idx,w,k); n=np.bincount(idx,None,k); c=np.where(n>0,s/np.maximum(n,1),c); c.sort()
    mid=(c[1:]+c[:-1])/2; idx=np.searchsorted(mid,w); return c[idx],idx
def uni(w,step):
    idx=np.round(w/step).astype(int); return idx*step, idx
for name in ['_fc.weight','onnx::Conv_1053','onnx::Conv_1050','onnx::Conv_921']:
    w=W[name].ravel().astype(np.float64); v=w.var()
    print(name,w.size)
    for k in (16,32,64):
        q,idx=lloyd(w,k); print('  kmeans k=%d H=%.2f relMSE=%.2e'%(k,H(idx),((q-w)**2).mean()/v))
    for s in (0.3,0.15,0.08):
        q,idx=uni(w,s*w.std()); print('  uniform step %.2fσ H=%.2f relMSE=%.2e levels=%d'%(s,H(idx),((q-w)**2).mean()/v,len(np.unique(idx))))
