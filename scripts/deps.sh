#!/bin/sh
# Installs the Debian packages kiln needs that are not installed yet.
# Sourced by scripts/quickstart and scripts/check; runs apt-get only when
# something is missing (as root, or through sudo).
# libopenblas0-pthread is only for `kiln-bench gemm --compare openblas`;
# Open MPI builds the mpi communicator plugin and runs tests/test_mpi.sh.
KILN_DEBS="gcc make autoconf automake libtool pkg-config libc6-dev
  libcriterion-dev ocl-icd-opencl-dev opencl-headers libclblast-dev
  pocl-opencl-icd zlib1g-dev libjansson-dev dataset-fashion-mnist libopenblas0-pthread
  groff-base libopenmpi-dev openmpi-bin"

kiln_install_deps() {
    missing=
    for p in $KILN_DEBS; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
            missing="$missing $p"
    done
    [ -z "$missing" ] && return 0
    echo "kiln: installing missing Debian packages:$missing"
    if [ "$(id -u)" -eq 0 ]; then sudo=; else sudo=sudo; fi
    $sudo apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing
}

# Configures and builds in the source tree unless that is already done.
# Extra arguments go to configure.
kiln_build() {
    [ -x configure ] || autoreconf -fi || return 1
    if [ ! -f Makefile ] || [ -n "$*" ]; then
        ./configure "$@" || return 1
    fi
    make -j"$(nproc)"
}
