// Training-mode BatchNorm (batch statistics) followed by LeakyReLU, forward and gradient, of NCHW float32
// maps, as MindSpore "aot" custom ops (src/bn_leaky.py). MindSpore's CPU BatchNorm, BatchNormGrad and the
// LeakyReLU around them took 38% of Tiny-DarkNet's training-step op time (its profiler, batch 32, 224 px,
// 2-core Intel Xeon), each a separate pass over the activation maps; here the forward reads x three times
// and writes y once, the gradient reads (x, y, dy) twice and writes dx once.
//
// Statistics are accumulated in double per channel, and the variance is the biased one about the mean
// (two passes), as the normalisation of BatchNorm in training uses. Channels are split between threads.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <thread>
#include <vector>

namespace {

constexpr float kEps = 1e-3f;   // Tiny-DarkNet's BatchNorm eps
constexpr float kAlpha = 0.2f;  // LeakyReLU slope

template <typename Body>
void for_channels(int64_t channels, int64_t elems, Body body) {
  int64_t threads = std::max(1u, std::thread::hardware_concurrency());
  threads = std::min(threads, std::max<int64_t>(1, elems / 65536));
  threads = std::min(threads, channels);
  if (threads <= 1) {
    body(0, channels);
    return;
  }
  std::vector<std::thread> pool;
  const int64_t chunk = (channels + threads - 1) / threads;
  for (int64_t t = 1; t < threads; ++t) {
    const int64_t lo = t * chunk, hi = std::min(channels, lo + chunk);
    if (lo < hi) pool.emplace_back(body, lo, hi);
  }
  body(0, std::min(channels, chunk));
  for (auto &th : pool) th.join();
}

struct Maps {
  int64_t n, c, hw;
};

int maps_of(int nparam, int want, const int *ndims, int64_t **shapes, Maps *m) {
  if (nparam != want || ndims[0] != 4) return 1;
  *m = {shapes[0][0], shapes[0][1], shapes[0][2] * shapes[0][3]};
  return m->n * m->hw > 1 ? 0 : 2;  // one value per channel has no variance
}

}  // namespace

// params: x [N,C,H,W], gamma [C], beta [C] -> y [N,C,H,W], mean [C], invstd [C] (1 / sqrt(var + eps))
extern "C" int BnLeaky(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                       void *extra) {
  Maps m;
  if (const int bad = maps_of(nparam, 6, ndims, shapes, &m)) return bad;
  const float *x = static_cast<const float *>(params[0]);
  const float *gamma = static_cast<const float *>(params[1]), *beta = static_cast<const float *>(params[2]);
  float *y = static_cast<float *>(params[3]);
  float *mean_out = static_cast<float *>(params[4]), *invstd_out = static_cast<float *>(params[5]);
  const int64_t n = m.n, c = m.c, hw = m.hw;
  for_channels(c, n * c * hw, [=](int64_t lo, int64_t hi) {
    for (int64_t ch = lo; ch < hi; ++ch) {
      double sum = 0.0;
      for (int64_t i = 0; i < n; ++i) {
        const float *p = x + (i * c + ch) * hw;
        float s = 0.f;
#pragma omp simd reduction(+ : s)
        for (int64_t k = 0; k < hw; ++k) s += p[k];
        sum += s;
      }
      const double mean = sum / double(n * hw);
      const float fm = float(mean);
      double sq = 0.0;
      for (int64_t i = 0; i < n; ++i) {
        const float *p = x + (i * c + ch) * hw;
        float s = 0.f;
#pragma omp simd reduction(+ : s)
        for (int64_t k = 0; k < hw; ++k) {
          const float d = p[k] - fm;
          s += d * d;
        }
        sq += s;
      }
      const float invstd = float(1.0 / std::sqrt(sq / double(n * hw) + kEps));
      const float scale = gamma[ch] * invstd, shift = beta[ch] - fm * scale;
      for (int64_t i = 0; i < n; ++i) {
        const float *p = x + (i * c + ch) * hw;
        float *q = y + (i * c + ch) * hw;
        for (int64_t k = 0; k < hw; ++k) {
          const float z = p[k] * scale + shift;
          q[k] = std::max(z, kAlpha * z);
        }
      }
      mean_out[ch] = fm;
      invstd_out[ch] = invstd;
    }
  });
  return 0;
}

// params: x, y, dy [N,C,H,W], gamma, mean, invstd [C] -> dx [N,C,H,W], dgamma [C], dbeta [C]
extern "C" int BnLeakyGrad(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                           void *stream, void *extra) {
  Maps m;
  if (const int bad = maps_of(nparam, 9, ndims, shapes, &m)) return bad;
  const float *x = static_cast<const float *>(params[0]), *y = static_cast<const float *>(params[1]);
  const float *dy = static_cast<const float *>(params[2]), *gamma = static_cast<const float *>(params[3]);
  const float *mean = static_cast<const float *>(params[4]), *invstd = static_cast<const float *>(params[5]);
  float *dx = static_cast<float *>(params[6]);
  float *dgamma = static_cast<float *>(params[7]), *dbeta = static_cast<float *>(params[8]);
  const int64_t n = m.n, c = m.c, hw = m.hw;
  for_channels(c, n * c * hw, [=](int64_t lo, int64_t hi) {
    for (int64_t ch = lo; ch < hi; ++ch) {
      const float fm = mean[ch], is = invstd[ch];
      double sdz = 0.0, sdzx = 0.0;  // sums of dz and dz * (x - mean), dz the gradient before LeakyReLU
      for (int64_t i = 0; i < n; ++i) {
        const int64_t o = (i * c + ch) * hw;
        float a = 0.f, b = 0.f;
#pragma omp simd reduction(+ : a, b)
        for (int64_t k = 0; k < hw; ++k) {
          const float dz = y[o + k] > 0.f ? dy[o + k] : kAlpha * dy[o + k];
          a += dz;
          b += dz * (x[o + k] - fm);
        }
        sdz += a;
        sdzx += b;
      }
      const double count = double(n * hw);
      dbeta[ch] = float(sdz);
      dgamma[ch] = float(sdzx * is);
      // dx = gamma * invstd * (dz - mean(dz) - xhat * mean(dz * xhat))
      const float g = gamma[ch] * is, mdz = float(sdz / count), k2 = float(sdzx * is * is / count);
      for (int64_t i = 0; i < n; ++i) {
        const int64_t o = (i * c + ch) * hw;
        for (int64_t k = 0; k < hw; ++k) {
          const float dz = y[o + k] > 0.f ? dy[o + k] : kAlpha * dy[o + k];
          dx[o + k] = g * (dz - mdz - (x[o + k] - fm) * k2);
        }
      }
    }
  });
  return 0;
}
