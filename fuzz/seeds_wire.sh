#!/bin/sh
# Seeds of fuzz_wire: each kind of message in the form batch_wire.c writes
# it, and a few near misses.
set -eu
out=$1
mkdir -p "$out"
printf '{"msg":"hello","threads":32,"host":"node07"}' >"$out/hello"
printf '{"msg":"run","wire":3,"path":"in/a.svs","id":"a","rel":"a.svs","root":"in","options":null,"params":"slidepipe-batch/1 run tile-size=254","fingerprint":"0123456789abcdef","quickhash":"8f3c0e6a1d2b4c5e","vendor":"aperio","threads":2,"width":4443,"height":3567}' >"$out/run"
printf '{"msg":"result","wire":3,"status":2,"code":0,"stage":null,"error":null,"seconds":2.25,"tiles":379,"tissue_area_mm2":1.5}' >"$out/result-done"
printf '{"msg":"result","wire":0,"status":4,"code":1,"stage":"open","error":"in/b.svs: cannot read pixels: Bogus marker length","seconds":0.01,"tiles":-1,"tissue_area_mm2":null}' >"$out/result-failed"
printf '{"msg":"stop"}' >"$out/stop"
printf '{"msg":"cancel"}' >"$out/cancel"
printf '{"msg":"run","wire":-1,"id":"../x"}' >"$out/bad-run"
printf '{"msg":"hello","threads":1e300,"host":7}' >"$out/bad-hello"
