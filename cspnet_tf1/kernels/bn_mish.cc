// The batch-axis normalisation of CSPDarknet53's conv blocks and the Mish that follows it, forward and
// gradient, each as one pass over the map (kernels/__init__.py builds and loads this file).
//
// Why: on CPU the normalisation (one FusedBatchNorm) and Mish (Softplus, Tanh, Mul forward; Sigmoid,
// TanhGrad, three Muls, AddN backward) cost about 11 full passes over every activation of the network
// per step, a third of the step; here they cost about 4. The maths is the original's: statistics per
// position (all axes but the batch) over the batch, biased variance, eps added to it, no scale/offset,
// and Mish(v) = v tanh(softplus(v)); only the formulas below differ in rounding.
#define EIGEN_USE_THREADS
#include <algorithm>
#include <cmath>
#include <functional>
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "unsupported/Eigen/CXX11/Tensor"

namespace {
using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::TensorShape;
using Index = Eigen::Index;
constexpr Index kChunk = 256;  // positions per work item: B rows x 256 floats of each operand stay in L2
using Row = Eigen::Array<float, Eigen::Dynamic, 1, 0, kChunk, 1>;
using CMap = Eigen::Map<const Row>;
using MMap = Eigen::Map<Row>;

// Mish of v and its derivative, with one exp and one division:
// w = e^min(v, 20), n = w (w + 2) = (1 + w)^2 - 1, r = 1 / (n + 2);
// tanh(softplus(v)) = n r; 1 - tanh^2 = 4 (1 + w)^2 r^2; sigmoid(v) = w / (1 + w), so
// mish'(v) = n r + v (1 - tanh^2) sigmoid = r (n + 4 v w (1 + w) r).
// Beyond v = 20, tanh(softplus(v)) rounds to 1 in float32, so clamping w changes nothing.

void ForEachChunk(OpKernelContext* ctx, Index batch, Index positions, int passes,
                  const std::function<void(Index, Index)>& body) {
  const Index chunks = (positions + kChunk - 1) / kChunk;
  auto work = [&](Index c0, Index c1) {
    for (Index c = c0; c < c1; ++c) body(c * kChunk, std::min(kChunk, positions - c * kChunk));
  };
  const double bytes = 4.0 * batch * kChunk;
  ctx->eigen_device<Eigen::ThreadPoolDevice>().parallelFor(
      chunks, Eigen::TensorOpCost(bytes * passes, bytes, batch * kChunk * 40.0), work);
}

class BatchNormMishOp : public OpKernel {
 public:
  explicit BatchNormMishOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, c->GetAttr("epsilon", &eps_));
  }
  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    OP_REQUIRES(ctx, x.dims() >= 1 && x.dim_size(0) > 0,
                tensorflow::errors::InvalidArgument("x needs a non-empty batch axis"));
    const Index batch = x.dim_size(0), positions = x.NumElements() / batch;
    TensorShape per_position = x.shape();
    per_position.RemoveDim(0);
    Tensor *z, *mean, *rstd;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &z));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, per_position, &mean));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, per_position, &rstd));
    const float* xp = x.flat<float>().data();
    float *zp = z->flat<float>().data(), *mp = mean->flat<float>().data(), *sp = rstd->flat<float>().data();
    const float eps = eps_;
    ForEachChunk(ctx, batch, positions, 3, [&](Index p0, Index len) {
      Row acc = Row::Zero(len);
      for (Index b = 0; b < batch; ++b) acc += CMap(xp + b * positions + p0, len);
      const Row m = acc / float(batch);
      acc.setZero();
      for (Index b = 0; b < batch; ++b) acc += (CMap(xp + b * positions + p0, len) - m).square();
      const Row s = (acc / float(batch) + eps).rsqrt();
      MMap(mp + p0, len) = m;
      MMap(sp + p0, len) = s;
      for (Index b = 0; b < batch; ++b) {
        const Row v = (CMap(xp + b * positions + p0, len) - m) * s;
        const Row w = v.min(20.f).exp();
        const Row n = w * (w + 2.f);
        MMap(zp + b * positions + p0, len) = v * n / (n + 2.f);
      }
    });
  }

 private:
  float eps_;
};

class BatchNormMishGradOp : public OpKernel {
 public:
  explicit BatchNormMishGradOp(OpKernelConstruction* c) : OpKernel(c) {}
  void Compute(OpKernelContext* ctx) override {
    const Tensor &dz = ctx->input(0), &x = ctx->input(1), &mean = ctx->input(2), &rstd = ctx->input(3);
    OP_REQUIRES(ctx, dz.shape() == x.shape() && x.dims() >= 1 && x.dim_size(0) > 0 &&
                         mean.NumElements() * x.dim_size(0) == x.NumElements() &&
                         rstd.NumElements() == mean.NumElements(),
                tensorflow::errors::InvalidArgument("dz, x, mean, rstd do not match"));
    const Index batch = x.dim_size(0), positions = x.NumElements() / batch;
    Tensor* dx;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &dx));
    const float *gp = dz.flat<float>().data(), *xp = x.flat<float>().data();
    const float *mp = mean.flat<float>().data(), *sp = rstd.flat<float>().data();
    float* dp = dx->flat<float>().data();
    ForEachChunk(ctx, batch, positions, 4, [&](Index p0, Index len) {
      const CMap m(mp + p0, len), s(sp + p0, len);
      Row sum_g = Row::Zero(len), sum_gv = Row::Zero(len);
      // pass 1: g = dz * mish'(v) (kept in dx) and its two batch sums
      for (Index b = 0; b < batch; ++b) {
        const Index o = b * positions + p0;
        const Row v = (CMap(xp + o, len) - m) * s;
        const Row w = v.min(20.f).exp();
        const Row n = w * (w + 2.f);
        const Row r = (n + 2.f).inverse();
        const Row g = CMap(gp + o, len) * r * (n + 4.f * v * w * (w + 1.f) * r);
        sum_g += g;
        sum_gv += g * v;
        MMap(dp + o, len) = g;
      }
      // pass 2: the normalisation's gradient with batch statistics (biased variance)
      const Row mean_g = sum_g / float(batch), mean_gv = sum_gv / float(batch);
      for (Index b = 0; b < batch; ++b) {
        const Index o = b * positions + p0;
        const Row v = (CMap(xp + o, len) - m) * s;
        MMap(dp + o, len) = s * (CMap(dp + o, len) - mean_g - v * mean_gv);
      }
    });
  }
};
}  // namespace

REGISTER_OP("ModelzooBatchNormMish")
    .Input("x: float")
    .Output("z: float")
    .Output("mean: float")
    .Output("rstd: float")
    .Attr("epsilon: float")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      tensorflow::shape_inference::ShapeHandle rest;
      TF_RETURN_IF_ERROR(c->Subshape(c->input(0), 1, &rest));
      c->set_output(0, c->input(0));
      c->set_output(1, rest);
      c->set_output(2, rest);
      return absl::OkStatus();
    });
REGISTER_OP("ModelzooBatchNormMishGrad")
    .Input("dz: float")
    .Input("x: float")
    .Input("mean: float")
    .Input("rstd: float")
    .Output("dx: float")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(1));
      return absl::OkStatus();
    });
REGISTER_KERNEL_BUILDER(Name("ModelzooBatchNormMish").Device(tensorflow::DEVICE_CPU), BatchNormMishOp);
REGISTER_KERNEL_BUILDER(Name("ModelzooBatchNormMishGrad").Device(tensorflow::DEVICE_CPU), BatchNormMishGradOp);
