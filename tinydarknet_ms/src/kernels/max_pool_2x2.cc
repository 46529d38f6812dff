// 2x2 / stride-2 max-pool of NCHW float32 maps with even H and W, forward and gradient, as MindSpore
// "aot" custom ops (src/max_pool.py). MindSpore's own MaxPoolGrad took 21% of Tiny-DarkNet's CPU training
// step (its profiler, batch 32, 224 px); these loops touch each input element once.
//
// The gradient goes to the first largest element of each window in row-major order; the forward pass is
// recomputed from x in the gradient (no index tensor to keep between the two).
#include <algorithm>
#include <cstdint>
#include <thread>
#include <vector>

namespace {

// run body(first_plane, end_plane) on up to hardware_concurrency threads
template <typename Body>
void for_planes(int64_t planes, int64_t plane_elems, Body body) {
  int64_t threads = std::max(1u, std::thread::hardware_concurrency());
  // under ~64k elements per thread, starting a thread costs more than it saves
  threads = std::min(threads, std::max<int64_t>(1, planes * plane_elems / 65536));
  threads = std::min(threads, planes);
  if (threads <= 1) {
    body(0, planes);
    return;
  }
  std::vector<std::thread> pool;
  const int64_t chunk = (planes + threads - 1) / threads;
  for (int64_t t = 1; t < threads; ++t) {
    const int64_t lo = t * chunk, hi = std::min(planes, lo + chunk);
    if (lo < hi) pool.emplace_back(body, lo, hi);
  }
  body(0, std::min(planes, chunk));
  for (auto &th : pool) th.join();
}

// the shape of the input maps into m; returns 0, or MindSpore's error code: 1 wrong arity or not 4-d, 2 odd H or W
struct Maps {
  int64_t planes, h, w, oh, ow;
};

int maps_of(int nparam, int want, const int *ndims, int64_t **shapes, Maps *m) {
  if (nparam != want || ndims[0] != 4) return 1;
  *m = {shapes[0][0] * shapes[0][1], shapes[0][2], shapes[0][3], shapes[0][2] / 2, shapes[0][3] / 2};
  return (m->h % 2 || m->w % 2) ? 2 : 0;
}

}  // namespace

// params: x [N,C,H,W], y [N,C,H/2,W/2]
extern "C" int MaxPool2x2(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                          void *stream, void *extra) {
  Maps m;
  if (const int bad = maps_of(nparam, 2, ndims, shapes, &m)) return bad;
  const float *x = static_cast<const float *>(params[0]);
  float *y = static_cast<float *>(params[1]);
  const int64_t h = m.h, w = m.w, oh = m.oh, ow = m.ow;
  for_planes(m.planes, h * w, [=](int64_t lo, int64_t hi) {
    for (int64_t p = lo; p < hi; ++p) {
      const float *xp = x + p * h * w;
      float *yp = y + p * oh * ow;
      for (int64_t i = 0; i < oh; ++i) {
        const float *r0 = xp + 2 * i * w, *r1 = r0 + w;
        float *yr = yp + i * ow;
        for (int64_t j = 0; j < ow; ++j) {
          const float a = std::max(r0[2 * j], r0[2 * j + 1]), b = std::max(r1[2 * j], r1[2 * j + 1]);
          yr[j] = std::max(a, b);
        }
      }
    }
  });
  return 0;
}

// params: x [N,C,H,W], dy [N,C,H/2,W/2], dx [N,C,H,W]
extern "C" int MaxPool2x2Grad(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                              void *stream, void *extra) {
  Maps m;
  if (const int bad = maps_of(nparam, 3, ndims, shapes, &m)) return bad;
  const float *x = static_cast<const float *>(params[0]);
  const float *dy = static_cast<const float *>(params[1]);
  float *dx = static_cast<float *>(params[2]);
  const int64_t h = m.h, w = m.w, oh = m.oh, ow = m.ow;
  for_planes(m.planes, h * w, [=](int64_t lo, int64_t hi) {
    for (int64_t p = lo; p < hi; ++p) {
      const float *xp = x + p * h * w, *gp = dy + p * oh * ow;
      float *dp = dx + p * h * w;
      for (int64_t i = 0; i < oh; ++i) {
        const float *r0 = xp + 2 * i * w, *r1 = r0 + w, *g = gp + i * ow;
        float *d0 = dp + 2 * i * w, *d1 = d0 + w;
        for (int64_t j = 0; j < ow; ++j) {
          const float v00 = r0[2 * j], v01 = r0[2 * j + 1], v10 = r1[2 * j], v11 = r1[2 * j + 1];
          float m = v00;
          int k = 0;
          if (v01 > m) { m = v01; k = 1; }
          if (v10 > m) { m = v10; k = 2; }
          if (v11 > m) { k = 3; }
          const float gv = g[j];
          d0[2 * j] = k == 0 ? gv : 0.f;
          d0[2 * j + 1] = k == 1 ? gv : 0.f;
          d1[2 * j] = k == 2 ? gv : 0.f;
          d1[2 * j + 1] = k == 3 ? gv : 0.f;
        }
      }
    }
  });
  return 0;
}
