#!/usr/bin/env bash
# The CMake flags llama-cpp-python and llama.cpp's own tools are built with, one line: both
# the Makefile (the wheel) and build_llama_cli.sh (llama-completion) take them from here, so the
# two always compute the same numbers, whoever starts the build. $CMAKE_ARGS, when set, wins.
#
# On x86-64: one fixed instruction set (AVX2, FMA, F16C; x86-64-v3) instead of -march=native,
# so every machine computes the same greedy replies (sessions replay exactly anywhere), and no
# AMX kernels, which crash on the default model's Q4_1 weights on CPUs that have AMX.
# Elsewhere: llama.cpp's defaults.
# Everywhere: the RPC backend (-DGGML_RPC=ON), so `steer chat --rpc` can put layers on
# `steer rpc-server` processes (docs/scaling.md). It adds a backend; the CPU kernels are unchanged.
if [[ -n ${CMAKE_ARGS:-} ]]; then
    echo "$CMAKE_ARGS"
elif [[ $(uname -m) == x86_64 ]]; then
    echo "-DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_RPC=ON"
else
    echo "-DGGML_RPC=ON"
fi
