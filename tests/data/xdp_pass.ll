; A tiny XDP program standing in for "another tool's" program in the coexistence tests:
; it passes every packet (XDP_PASS = 2). Written in LLVM IR so the tests need only `llc`
; (part of Debian's llvm-22, which setup.sh installs for bpf-linker), not clang:
;   llc -march=bpfel -filetype=obj xdp_pass.ll -o xdp_pass.o
;   ip -n NS link set dev eth1 xdpgeneric obj xdp_pass.o sec xdp
target datalayout = "e-m:e-p:64:64-i64:64-i128:128-n32:64-S128"
target triple = "bpfel"

@_license = dso_local global [4 x i8] c"GPL\00", section "license", align 1
@llvm.used = appending global [2 x ptr] [ptr @_license, ptr @other_xdp], section "llvm.metadata"

define dso_local i32 @other_xdp(ptr nocapture readnone %ctx) section "xdp" {
  ret i32 2
}
