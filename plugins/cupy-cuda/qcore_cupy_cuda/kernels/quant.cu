// Element-wise quantize / dequantize of integer formats (int8, uint8, int4, uint4)
// with qparams computed by the caller (qcore.qparams, in torch).
//
// Element i of the flattened tensor uses qparam (i / div) % mod: tensor (div 1, mod 1),
// token (div K, mod rows), group (div g, mod numel / g), channel along axis a
// (div = product of the dimensions after a, mod = S[a]).
//
// Codes follow docs/numerics.md exactly: q = clamp(rint(double(x) / double(scale)) + zp,
// qmin, qmax); rint() rounds half to even. Codes are written as bytes: a signed code's
// byte is its two's complement, which torch reads back as int8.

extern "C" __global__ void quantize_affine(
    const float* __restrict__ x, const float* __restrict__ scale, const int* __restrict__ zero_point,
    unsigned char* __restrict__ codes, long long n, long long div, long long mod, int qmin, int qmax)
{
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        const long long p = (i / div) % mod;
        double q = rint((double)x[i] / (double)scale[p]) + (double)zero_point[p];
        q = fmin(fmax(q, (double)qmin), (double)qmax);
        codes[i] = (unsigned char)(int)q;
    }
}

extern "C" __global__ void dequantize_affine(
    const unsigned char* __restrict__ codes, const float* __restrict__ scale, const int* __restrict__ zero_point,
    float* __restrict__ out, long long n, long long div, long long mod, int is_signed)
{
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        const long long p = (i / div) % mod;
        const int q = is_signed ? (int)(signed char)codes[i] : (int)codes[i];
        // (q - zp) is an exact integer; one float32 rounding, as the contract says.
        out[i] = __fmul_rn((float)(q - zero_point[p]), scale[p]);
    }
}
