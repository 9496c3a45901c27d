#!/usr/bin/env python3
"""onnxruntime (one thread) on a single convolution (+ Clip to [0, 6]) or a single Gemm, for
comparing one layer with nnzip's kernel on the same shape (`core/examples/stem_shapes.rs`). The
ONNX model is built here with random weights, its protobuf encoded by hand (the venv has no
`onnx` package). Prints per round the mean thread-CPU and wall µs of one `run` (the Python call
included).

    python3 tools/benches/ort_one_layer.py conv CIN COUT HW K STRIDE PT PL PB PR RELU6 ROUNDS RUNS
    python3 tools/benches/ort_one_layer.py gemm K N ROUNDS RUNS

e.g. EfficientNet-Lite0's stem: `conv 3 32 224 3 2 0 0 1 1 1 3 200`. Needs numpy and
onnxruntime (target/bench/venv has them); pin it with `taskset -c 0` and OMP_NUM_THREADS=1.
"""
# prints per round the mean thread-CPU and wall µs per run.
import sys, time, struct, numpy as np, onnxruntime as ort
def varint(n):
    out=b''
    while True:
        b=n&0x7f; n>>=7
        if n: out+=bytes([b|0x80])
        else: return out+bytes([b])
def key(f,wt): return varint((f<<3)|wt)
def ld(f,b): return key(f,2)+varint(len(b))+b
def vi(f,n): return key(f,0)+varint(n)
def s(f,t): return ld(f,t.encode())
def tensor(name, arr):
    arr=np.ascontiguousarray(arr,dtype=np.float32)
    return b''.join(vi(1,d) for d in arr.shape)+vi(2,1)+s(8,name)+ld(9,arr.tobytes())
def attr_ints(name, v): return s(1,name)+vi(20,7)+b''.join(vi(8,x) for x in v)
def attr_int(name, v): return s(1,name)+vi(20,2)+vi(3,v)
def node(op, ins, outs, attrs=()):
    return b''.join(s(1,i) for i in ins)+b''.join(s(2,o) for o in outs)+s(3,op+"_n")+s(4,op)+b''.join(ld(5,a) for a in attrs)
def vinfo(name, shape):
    dims=b''.join(ld(1,vi(1,d)) for d in shape)
    return s(1,name)+ld(2,ld(1,vi(1,1)+ld(2,dims)))
def model(nodes, inits, inp, out):
    g=b''.join(ld(1,n) for n in nodes)+s(2,"g")+b''.join(ld(5,t) for t in inits)+ld(11,vinfo(*inp))+ld(12,vinfo(*out))
    return vi(1,7)+ld(8,s(1,"")+vi(2,13))+ld(7,g)
rng=np.random.default_rng(0)
kind=sys.argv[1]
if kind=="conv":
    cin,cout,hw,k,st,pt,pl,pb,pr,relu6,rounds,runs=map(int,sys.argv[2:14])
    oh=(hw+pt+pb-k)//st+1; ow=(hw+pl+pr-k)//st+1
    W=rng.standard_normal((cout,cin,k,k))*0.1; B=rng.standard_normal(cout)*0.1
    nodes=[node("Conv",["x","W","B"],["c" if relu6 else "y"],[attr_ints("kernel_shape",[k,k]),attr_ints("strides",[st,st]),attr_ints("pads",[pt,pl,pb,pr])])]
    inits=[tensor("W",W),tensor("B",B)]
    if relu6:
        inits+= [tensor("lo",np.array(0.0)),tensor("hi",np.array(6.0))]
        nodes.append(node("Clip",["c","lo","hi"],["y"]))
    m=model(nodes,inits,("x",[1,cin,hw,hw]),("y",[1,cout,oh,ow])); x=rng.random((1,cin,hw,hw),dtype=np.float32)
else:
    kk,n,rounds,runs=map(int,sys.argv[2:6])
    W=rng.standard_normal((n,kk))*0.01; B=rng.standard_normal(n)*0.1
    nodes=[node("Gemm",["x","W","B"],["y"],[attr_int("transB",1)])]
    m=model(nodes,[tensor("W",W),tensor("B",B)],("x",[1,kk]),("y",[1,n])); x=rng.random((1,kk),dtype=np.float32)
o=ort.SessionOptions(); o.intra_op_num_threads=1; o.inter_op_num_threads=1
sess=ort.InferenceSession(m,o,providers=["CPUExecutionProvider"])
for _ in range(5): sess.run(None,{"x":x})
for r in range(rounds):
    c=time.thread_time(); w=time.perf_counter()
    for _ in range(runs): sess.run(None,{"x":x})
    print("cpu %.1f wall %.1f"%((time.thread_time()-c)/runs*1e6,(time.perf_counter()-w)/runs*1e6))
