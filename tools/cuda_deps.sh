#!/bin/sh
# cuda_deps.sh: prepare .deps/ (git-ignored) for tools/cuda_forward_gpu.sh on the GPU machine, which lacks
# the json-c, PCRE2, xxhash and OpenBLAS headers/libraries the engine needs. Run here (Debian, apt), from the
# repository root; pass `.deps` in the device call's carry list. .deps/setup.sh, sourced there, unpacks
# the OpenBLAS runtime and points pkg-config, the compiler and the loader at .deps/root.
set -eu
rm -rf .deps && mkdir -p .deps/root .deps/dev .deps/tmp
cd .deps/tmp
apt-get download libjson-c-dev libjson-c5 libpcre2-dev libpcre2-8-0 libopenblas-pthread-dev libxxhash-dev \
    libopenblas0-pthread libgfortran5 libquadmath0 2>/dev/null
cd ../..
for f in .deps/tmp/libjson-c* .deps/tmp/libpcre2* .deps/tmp/libopenblas-pthread-dev* .deps/tmp/libxxhash-dev*; do
    dpkg -x "$f" .deps/root
done
mv .deps/tmp/libopenblas0-pthread* .deps/tmp/libgfortran5* .deps/tmp/libquadmath0* .deps/dev/
rm -rf .deps/tmp .deps/root/usr/share .deps/root/usr/lib/x86_64-linux-gnu/cmake \
    .deps/root/usr/lib/x86_64-linux-gnu/openblas-pthread/cmake
find .deps/root -name '*.a' ! -name libjson-c.a ! -name libpcre2-8.a -delete # OpenBLAS's is 58 MB
ob=.deps/root/usr/lib/x86_64-linux-gnu/openblas-pthread
rm -f $ob/pkgconfig/*.pc
cat > $ob/pkgconfig/openblas.pc <<'PC'
libdir=@ROOT@/usr/lib/x86_64-linux-gnu/openblas-pthread
includedir=@ROOT@/usr/include/x86_64-linux-gnu/openblas-pthread
Name: openblas
Description: OpenBLAS (carried for the GPU machine)
Version: 0.3.21
Libs: -L${libdir} -lopenblas
Cflags: -I${includedir}
PC
find .deps/root -name '*.pc' -exec sed -i 's|=/usr|=@ROOT@/usr|' {} +
cat > .deps/setup.sh <<'SH'
# .deps/setup.sh (made by tools/cuda_deps.sh): source on the GPU machine from the repository root.
R=$PWD/.deps/root
for d in .deps/dev/*.deb; do dpkg -x "$d" "$R"; done
find "$R" -name '*.pc' -exec sed -i "s|@ROOT@|$R|g" {} +
export PKG_CONFIG_PATH=$R/usr/lib/x86_64-linux-gnu/pkgconfig:$R/usr/lib/x86_64-linux-gnu/openblas-pthread/pkgconfig
export LD_LIBRARY_PATH=$R/usr/lib/x86_64-linux-gnu/openblas-pthread:$R/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export C_INCLUDE_PATH=$R/usr/include${C_INCLUDE_PATH:+:$C_INCLUDE_PATH}
SH
du -sh .deps
