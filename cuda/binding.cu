// Fused binding transform: triangle frames + local-to-world for every splat, forward and backward.
//
// Mirrors dynavatar.gaussians.binding.bind_transform_torch (the reference and fallback):
//   e = norm(v1-v0), n = norm(e x (v2-v0)), b = e x n, R = [e n b] (columns),
//   k = (|v1-v0| + |b.(v2-v0)|)/2, T = centroid,
//   mu = k R mu_l + T, q = q(R) * normalize(q_l), s = k exp(s_l).
// q(R) follows geometry.rotations.matrix_to_quaternion (largest-diagonal candidate, w >= 0).
// The backward pass is hand-derived; tests/test_binding_cuda.py checks a line-by-line Python twin
// of it against autograd on CPU, and this kernel against the reference on GPU.
//
// One thread per splat; it loops over the B frames so the gradients of the local parameters need
// no atomics (vertex gradients use atomicAdd: several splats share a vertex).

#include <torch/extension.h>
#include <cuda.h>
#include <cuda_runtime.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>

namespace {

constexpr float EPS = 1e-8f;

struct V3 {
    float x, y, z;
};
__device__ __forceinline__ V3 operator+(V3 a, V3 b) { return {a.x + b.x, a.y + b.y, a.z + b.z}; }
__device__ __forceinline__ V3 operator-(V3 a, V3 b) { return {a.x - b.x, a.y - b.y, a.z - b.z}; }
__device__ __forceinline__ V3 operator*(float s, V3 a) { return {s * a.x, s * a.y, s * a.z}; }
__device__ __forceinline__ float dot(V3 a, V3 b) { return a.x * b.x + a.y * b.y + a.z * b.z; }
__device__ __forceinline__ V3 cross(V3 a, V3 b) {
    return {a.y * b.z - a.z * b.y, a.z * b.x - a.x * b.z, a.x * b.y - a.y * b.x};
}
__device__ __forceinline__ V3 load3(const float *p) { return {p[0], p[1], p[2]}; }
__device__ __forceinline__ void store3(float *p, V3 v) { p[0] = v.x; p[1] = v.y; p[2] = v.z; }
__device__ __forceinline__ void atomic3(float *p, V3 v) {
    atomicAdd(p, v.x); atomicAdd(p + 1, v.y); atomicAdd(p + 2, v.z);
}

// Hamilton product a * b, (w, x, y, z)
__device__ __forceinline__ void qmul(const float *a, const float *b, float *o) {
    o[0] = a[0] * b[0] - a[1] * b[1] - a[2] * b[2] - a[3] * b[3];
    o[1] = a[0] * b[1] + a[1] * b[0] + a[2] * b[3] - a[3] * b[2];
    o[2] = a[0] * b[2] - a[1] * b[3] + a[2] * b[0] + a[3] * b[1];
    o[3] = a[0] * b[3] + a[1] * b[2] - a[2] * b[1] + a[3] * b[0];
}

// Everything the forward computes for one (frame, splat), kept for the backward pass.
struct Frame {
    V3 d1, d2, e, c, n, b, T, Rm;
    float s1, l1, sc, lc, h, k;
    int best;
    float r, row[4], p[4], lp, qn[4], sgn, qR[4];
};

__device__ __forceinline__ void frame_forward(V3 v0, V3 v1, V3 v2, V3 ml, Frame &F) {
    F.d1 = v1 - v0;
    F.d2 = v2 - v0;
    F.s1 = dot(F.d1, F.d1);
    F.l1 = sqrtf(fmaxf(F.s1, EPS * EPS));
    F.e = (1.f / F.l1) * F.d1;
    F.c = cross(F.e, F.d2);
    F.sc = dot(F.c, F.c);
    F.lc = sqrtf(fmaxf(F.sc, EPS * EPS));
    F.n = (1.f / F.lc) * F.c;
    F.b = cross(F.e, F.n);
    F.h = dot(F.b, F.d2);
    F.k = 0.5f * (F.l1 + fabsf(F.h));
    F.T = (1.f / 3.f) * (v0 + v1 + v2);
    F.Rm = ml.x * F.e + ml.y * F.n + ml.z * F.b;
    // matrix -> quaternion; m_ij = row i of column j; columns e, n, b
    const float m00 = F.e.x, m10 = F.e.y, m20 = F.e.z;
    const float m01 = F.n.x, m11 = F.n.y, m21 = F.n.z;
    const float m02 = F.b.x, m12 = F.b.y, m22 = F.b.z;
    float cand[4] = {1.f + m00 + m11 + m22, 1.f + m00 - m11 - m22, 1.f - m00 + m11 - m22,
                     1.f - m00 - m11 + m22};
    int best = 0;
#pragma unroll
    for (int i = 1; i < 4; ++i)
        if (cand[i] > cand[best]) best = i;  // first maximum, like torch.argmax
    F.best = best;
    F.r = sqrtf(fmaxf(cand[best], 1e-12f));
    const float r2 = F.r * F.r;
    if (best == 0) {
        F.row[0] = r2; F.row[1] = m21 - m12; F.row[2] = m02 - m20; F.row[3] = m10 - m01;
    } else if (best == 1) {
        F.row[0] = m21 - m12; F.row[1] = r2; F.row[2] = m10 + m01; F.row[3] = m02 + m20;
    } else if (best == 2) {
        F.row[0] = m02 - m20; F.row[1] = m10 + m01; F.row[2] = r2; F.row[3] = m21 + m12;
    } else {
        F.row[0] = m10 - m01; F.row[1] = m02 + m20; F.row[2] = m21 + m12; F.row[3] = r2;
    }
    float pp = 0.f;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        F.p[i] = F.row[i] / (2.f * F.r);
        pp += F.p[i] * F.p[i];
    }
    F.lp = sqrtf(fmaxf(pp, 1e-24f));
#pragma unroll
    for (int i = 0; i < 4; ++i) F.qn[i] = F.p[i] / F.lp;
    F.sgn = F.qn[0] < 0.f ? -1.f : 1.f;
#pragma unroll
    for (int i = 0; i < 4; ++i) F.qR[i] = F.sgn * F.qn[i];
}

__device__ __forceinline__ void load_corners(const float *verts, const int *faces, int f, V3 &v0,
                                             V3 &v1, V3 &v2, int &i0, int &i1, int &i2) {
    i0 = faces[3 * f]; i1 = faces[3 * f + 1]; i2 = faces[3 * f + 2];
    v0 = load3(verts + 3 * i0); v1 = load3(verts + 3 * i1); v2 = load3(verts + 3 * i2);
}

__device__ __forceinline__ void normalized_quat(const float *q, float *qn, float &len) {
    float ss = q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3];
    len = sqrtf(fmaxf(ss, 1e-24f));
#pragma unroll
    for (int i = 0; i < 4; ++i) qn[i] = q[i] / len;
}

__global__ void bind_fwd_kernel(int B, int V, int N, const float *__restrict__ verts,
                                const int *__restrict__ faces, const int *__restrict__ binding,
                                const float *__restrict__ means_l, const float *__restrict__ quats_l,
                                const float *__restrict__ log_scales_l, float *__restrict__ means,
                                float *__restrict__ quats, float *__restrict__ scales) {
    const int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N) return;
    const int f = binding[n];
    const V3 ml = load3(means_l + 3 * n);
    float qln[4], lq;
    normalized_quat(quats_l + 4 * n, qln, lq);
    const V3 esl = {expf(log_scales_l[3 * n]), expf(log_scales_l[3 * n + 1]),
                    expf(log_scales_l[3 * n + 2])};
    for (int bi = 0; bi < B; ++bi) {
        V3 v0, v1, v2;
        int i0, i1, i2;
        load_corners(verts + (size_t)bi * V * 3, faces, f, v0, v1, v2, i0, i1, i2);
        Frame F;
        frame_forward(v0, v1, v2, ml, F);
        const size_t o = (size_t)bi * N + n;
        store3(means + 3 * o, F.k * F.Rm + F.T);
        qmul(F.qR, qln, quats + 4 * o);
        store3(scales + 3 * o, F.k * esl);
    }
}

__global__ void bind_bwd_kernel(int B, int V, int N, const float *__restrict__ verts,
                                const int *__restrict__ faces, const int *__restrict__ binding,
                                const float *__restrict__ means_l, const float *__restrict__ quats_l,
                                const float *__restrict__ log_scales_l,
                                const float *__restrict__ g_means, const float *__restrict__ g_quats,
                                const float *__restrict__ g_scales, float *__restrict__ g_verts,
                                float *__restrict__ g_means_l, float *__restrict__ g_quats_l,
                                float *__restrict__ g_log_scales_l) {
    const int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N) return;
    const int f = binding[n];
    const V3 ml = load3(means_l + 3 * n);
    float qln[4], lq;
    normalized_quat(quats_l + 4 * n, qln, lq);
    const V3 esl = {expf(log_scales_l[3 * n]), expf(log_scales_l[3 * n + 1]),
                    expf(log_scales_l[3 * n + 2])};
    V3 acc_ml = {0.f, 0.f, 0.f}, acc_sl = {0.f, 0.f, 0.f};
    float acc_ql[4] = {0.f, 0.f, 0.f, 0.f};
    for (int bi = 0; bi < B; ++bi) {
        V3 v0, v1, v2;
        int i0, i1, i2;
        load_corners(verts + (size_t)bi * V * 3, faces, f, v0, v1, v2, i0, i1, i2);
        Frame F;
        frame_forward(v0, v1, v2, ml, F);
        const size_t o = (size_t)bi * N + n;
        const V3 g_mu = load3(g_means + 3 * o);
        const V3 g_s = load3(g_scales + 3 * o);
        const float *g_q = g_quats + 4 * o;

        // scales and means
        float g_k = dot(g_s, esl) + dot(g_mu, F.Rm);
        acc_sl = acc_sl + F.k * V3{g_s.x * esl.x, g_s.y * esl.y, g_s.z * esl.z};
        const V3 g_T = g_mu;
        const V3 g_Rm = F.k * g_mu;
        V3 g_e = ml.x * g_Rm, g_n = ml.y * g_Rm, g_b = ml.z * g_Rm;
        acc_ml = acc_ml + F.k * V3{dot(F.e, g_mu), dot(F.n, g_mu), dot(F.b, g_mu)};

        // q = qR * qln
        const float qln_c[4] = {qln[0], -qln[1], -qln[2], -qln[3]};
        const float qR_c[4] = {F.qR[0], -F.qR[1], -F.qR[2], -F.qR[3]};
        float g_qR[4], g_qln[4];
        qmul(g_q, qln_c, g_qR);
        qmul(qR_c, g_q, g_qln);
        float dq = 0.f;
#pragma unroll
        for (int i = 0; i < 4; ++i) dq += qln[i] * g_qln[i];
#pragma unroll
        for (int i = 0; i < 4; ++i) acc_ql[i] += (g_qln[i] - qln[i] * dq) / lq;

        // qR = sgn * p / |p|,  p = row / (2 r)
        float g_qn[4], dn = 0.f;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            g_qn[i] = F.sgn * g_qR[i];
            dn += F.qn[i] * g_qn[i];
        }
        float g_row[4], gp_row = 0.f;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const float g_p = (g_qn[i] - F.qn[i] * dn) / F.lp;
            g_row[i] = g_p / (2.f * F.r);
            gp_row += g_p * F.row[i];
        }
        const int best = F.best;
        float g_r = -gp_row / (2.f * F.r * F.r) + 2.f * F.r * g_row[best];
        const float g_cand = g_r / (2.f * F.r);
        // diagonal signs of the chosen candidate
        const float sd[4][3] = {{1.f, 1.f, 1.f}, {1.f, -1.f, -1.f}, {-1.f, 1.f, -1.f}, {-1.f, -1.f, 1.f}};
        float gm[3][3] = {{0.f, 0.f, 0.f}, {0.f, 0.f, 0.f}, {0.f, 0.f, 0.f}};
        gm[0][0] = g_cand * sd[best][0];
        gm[1][1] = g_cand * sd[best][1];
        gm[2][2] = g_cand * sd[best][2];
        // off-diagonals: entry (best^1) holds m21 -+ m12, (best^2) m02 -+ m20, (best^3) m10 -+ m01
        const float sa[4] = {-1.f, -1.f, 1.f, 1.f};
        const float sb[4] = {-1.f, 1.f, -1.f, 1.f};
        const float sc[4] = {-1.f, 1.f, 1.f, -1.f};
        const float A = g_row[best ^ 1], Bq = g_row[best ^ 2], Cq = g_row[best ^ 3];
        gm[2][1] += A;
        gm[1][2] += sa[best] * A;
        gm[0][2] += Bq;
        gm[2][0] += sb[best] * Bq;
        gm[1][0] += Cq;
        gm[0][1] += sc[best] * Cq;
        g_e = g_e + V3{gm[0][0], gm[1][0], gm[2][0]};
        g_n = g_n + V3{gm[0][1], gm[1][1], gm[2][1]};
        g_b = g_b + V3{gm[0][2], gm[1][2], gm[2][2]};

        // k = (l1 + |h|) / 2, h = b . d2
        const float g_l1 = 0.5f * g_k;
        const float sh = F.h > 0.f ? 1.f : (F.h < 0.f ? -1.f : 0.f);
        const float g_h = 0.5f * g_k * sh;
        g_b = g_b + g_h * F.d2;
        V3 g_d2 = g_h * F.b;
        // b = e x n
        g_e = g_e + cross(F.n, g_b);
        g_n = g_n + cross(g_b, F.e);
        // n = c / |c|
        const V3 g_c = F.sc > EPS * EPS ? (1.f / F.lc) * (g_n - dot(F.n, g_n) * F.n)
                                        : (1.f / F.lc) * g_n;
        // c = e x d2
        g_e = g_e + cross(F.d2, g_c);
        g_d2 = g_d2 + cross(g_c, F.e);
        // e = d1 / |d1|, l1 = |d1|
        const V3 g_d1 = F.s1 > EPS * EPS
                            ? (1.f / F.l1) * (g_e - dot(F.e, g_e) * F.e) + g_l1 * F.e
                            : (1.f / F.l1) * g_e;
        float *gv = g_verts + (size_t)bi * V * 3;
        const V3 t3 = (1.f / 3.f) * g_T;
        atomic3(gv + 3 * i0, t3 - g_d1 - g_d2);
        atomic3(gv + 3 * i1, t3 + g_d1);
        atomic3(gv + 3 * i2, t3 + g_d2);
    }
    store3(g_means_l + 3 * n, acc_ml);
    store3(g_log_scales_l + 3 * n, acc_sl);
#pragma unroll
    for (int i = 0; i < 4; ++i) g_quats_l[4 * n + i] = acc_ql[i];
}

void check(const torch::Tensor &t, const char *name, torch::ScalarType dt) {
    TORCH_CHECK(t.is_cuda(), name, " must be a CUDA tensor");
    TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
    TORCH_CHECK(t.scalar_type() == dt, name, " has the wrong dtype");
}

}  // namespace

std::vector<torch::Tensor> bind_forward(torch::Tensor verts, torch::Tensor faces,
                                        torch::Tensor binding, torch::Tensor means_l,
                                        torch::Tensor quats_l, torch::Tensor log_scales_l) {
    check(verts, "vertices", torch::kFloat32);
    check(faces, "faces", torch::kInt32);
    check(binding, "binding", torch::kInt32);
    check(means_l, "means_local", torch::kFloat32);
    check(quats_l, "quats_local", torch::kFloat32);
    check(log_scales_l, "log_scales_local", torch::kFloat32);
    const int B = verts.size(0), V = verts.size(1), N = means_l.size(0);
    auto opts = verts.options();
    auto means = torch::empty({B, N, 3}, opts);
    auto quats = torch::empty({B, N, 4}, opts);
    auto scales = torch::empty({B, N, 3}, opts);
    if (N > 0 && B > 0) {
        const int threads = 256;
        bind_fwd_kernel<<<(N + threads - 1) / threads, threads, 0,
                          c10::cuda::getCurrentCUDAStream()>>>(
            B, V, N, verts.data_ptr<float>(), faces.data_ptr<int>(), binding.data_ptr<int>(),
            means_l.data_ptr<float>(), quats_l.data_ptr<float>(), log_scales_l.data_ptr<float>(),
            means.data_ptr<float>(), quats.data_ptr<float>(), scales.data_ptr<float>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    return {means, quats, scales};
}

std::vector<torch::Tensor> bind_backward(torch::Tensor verts, torch::Tensor faces,
                                         torch::Tensor binding, torch::Tensor means_l,
                                         torch::Tensor quats_l, torch::Tensor log_scales_l,
                                         torch::Tensor g_means, torch::Tensor g_quats,
                                         torch::Tensor g_scales) {
    check(verts, "vertices", torch::kFloat32);
    check(g_means, "grad means", torch::kFloat32);
    check(g_quats, "grad quats", torch::kFloat32);
    check(g_scales, "grad scales", torch::kFloat32);
    const int B = verts.size(0), V = verts.size(1), N = means_l.size(0);
    auto g_verts = torch::zeros_like(verts);
    auto g_ml = torch::empty_like(means_l);
    auto g_ql = torch::empty_like(quats_l);
    auto g_sl = torch::empty_like(log_scales_l);
    if (N > 0) {
        const int threads = 256;
        bind_bwd_kernel<<<(N + threads - 1) / threads, threads, 0,
                          c10::cuda::getCurrentCUDAStream()>>>(
            B, V, N, verts.data_ptr<float>(), faces.data_ptr<int>(), binding.data_ptr<int>(),
            means_l.data_ptr<float>(), quats_l.data_ptr<float>(), log_scales_l.data_ptr<float>(),
            g_means.data_ptr<float>(), g_quats.data_ptr<float>(), g_scales.data_ptr<float>(),
            g_verts.data_ptr<float>(), g_ml.data_ptr<float>(), g_ql.data_ptr<float>(),
            g_sl.data_ptr<float>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    return {g_verts, g_ml, g_ql, g_sl};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("forward", &bind_forward, "binding transform forward (CUDA)");
    m.def("backward", &bind_backward, "binding transform backward (CUDA)");
}
