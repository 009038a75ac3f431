// Helpers shared by the kernels: activations of either float type read as float.
// fp16 is handled as raw bits converted with one PTX instruction, so the sources need
// no header: NVRTC (through CuPy) and nvcc compile them the same way on any toolkit.
#pragma once

struct __align__(2) f16 { unsigned short bits; };

__device__ __forceinline__ float to_float(float v) { return v; }

__device__ __forceinline__ float to_float(f16 v)
{
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.bits));
    return f;
}

// Eight consecutive values starting at a 16-byte aligned address.
__device__ __forceinline__ void load8(const float* __restrict__ p, float* v)
{
    const float4 a = *reinterpret_cast<const float4*>(p);
    const float4 b = *reinterpret_cast<const float4*>(p + 4);
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
    v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
}

__device__ __forceinline__ void load8(const f16* __restrict__ p, float* v)
{
    const uint4 raw = *reinterpret_cast<const uint4*>(p);
    const unsigned int words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        v[2 * i] = to_float(f16{(unsigned short)(words[i] & 0xFFFFu)});
        v[2 * i + 1] = to_float(f16{(unsigned short)(words[i] >> 16)});
    }
}
