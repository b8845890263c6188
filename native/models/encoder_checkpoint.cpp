// Activation checkpointing (HF gradient_checkpointing, torch.utils.checkpoint's reentrant
// variant) as a LibTorch custom autograd function: the forward keeps only the block's input,
// the backward recomputes the block under grad mode and differentiates the recomputation.
// Trading one extra forward per block for not storing its attention scores, dropout masks and
// FFN activations is what lets base-size selectors train long sequences in bounded memory.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#ifdef GAINRAG_WITH_CUDA
#include <ATen/cuda/CUDAGeneratorImpl.h>
#endif

#include <functional>
#include <mutex>
#include <utility>
#include <vector>

#include "core/error.h"
#include "models/encoder.h"

namespace gainrag {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Generator states at one point in time. Dropout must draw the same masks in the recompute as
// in the original forward, or the gradients would belong to a different network than the
// loss; other consumers of the generators must not notice that a recompute happened.
struct RngSnapshot {
  at::Tensor cpu;
  at::Tensor cuda;
  int cuda_device = -1;

  static RngSnapshot Take(const at::Device& device) {
    RngSnapshot s;
    {
      at::Generator gen = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(gen.mutex());
      s.cpu = gen.get_state();
    }
#ifdef GAINRAG_WITH_CUDA
    if (device.is_cuda()) {
      s.cuda_device = device.has_index() ? device.index() : 0;
      at::Generator gen = at::cuda::detail::getDefaultCUDAGenerator(c10::DeviceIndex(s.cuda_device));
      std::lock_guard<std::mutex> lock(gen.mutex());
      s.cuda = gen.get_state();
    }
#else
    (void)device;
#endif
    return s;
  }

  void Restore() const {
    {
      at::Generator gen = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_state(cpu);
    }
#ifdef GAINRAG_WITH_CUDA
    if (cuda.defined()) {
      at::Generator gen = at::cuda::detail::getDefaultCUDAGenerator(c10::DeviceIndex(cuda_device));
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_state(cuda);
    }
#endif
  }
};

// What the backward needs besides the saved input. Autograd contexts only hold tensors and
// IValues, so the block travels as a capsule (an intrusive_ptr target).
struct Recompute : torch::CustomClassHolder {
  std::function<at::Tensor(const at::Tensor&)> fn;
  RngSnapshot rng;
};

struct CheckpointFunction : torch::autograd::Function<CheckpointFunction> {
  // Runs with grad mode off (Function::apply), so `fn` records no graph and frees its
  // intermediates as it goes. `params` are inputs only so that autograd routes their
  // gradients: the node's edges lead to their accumulators.
  static at::Tensor forward(AutogradContext* ctx, c10::intrusive_ptr<Recompute> state, const at::Tensor& x,
                            at::TensorList params) {
    state->rng = RngSnapshot::Take(x.device());
    at::Tensor out = state->fn(x);
    variable_list saved{x};
    saved.insert(saved.end(), params.begin(), params.end());
    ctx->save_for_backward(std::move(saved));
    ctx->saved_data["state"] = at::IValue::make_capsule(std::move(state));
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    variable_list params = ctx->get_saved_variables();
    const at::Tensor x = params[0];
    params.erase(params.begin());
    auto state = c10::static_intrusive_pointer_cast<Recompute>(ctx->saved_data["state"].toCapsule());

    at::Tensor detached = x.detach().requires_grad_(x.requires_grad());
    at::Tensor out;
    {
      // Replay the forward's random draws, then put the generators back where the backward
      // found them (also when the recompute throws).
      const RngSnapshot now = RngSnapshot::Take(x.device());
      struct Restorer {
        const RngSnapshot& s;
        ~Restorer() { s.Restore(); }
      } restore{now};
      state->rng.Restore();
      at::AutoGradMode grad(true);
      out = state->fn(detached);
    }

    variable_list wrt;
    // One gradient per forward argument: [state (none), x, params...].
    std::vector<size_t> slot;
    variable_list result(2 + params.size());
    if (detached.requires_grad()) {
      wrt.push_back(detached);
      slot.push_back(1);
    }
    for (size_t i = 0; i < params.size(); ++i) {
      if (params[i].requires_grad()) {
        wrt.push_back(params[i]);
        slot.push_back(2 + i);
      }
    }
    if (wrt.empty() || !out.requires_grad()) return result;
    // allow_unused: a parameter the block does not read (e.g. a head it skips) gets no gradient.
    variable_list grads = torch::autograd::grad({out}, wrt, {grad_out[0]}, /*retain_graph=*/false,
                                                /*create_graph=*/false, /*allow_unused=*/true);
    for (size_t i = 0; i < grads.size(); ++i) result[slot[i]] = grads[i];
    return result;
  }
};

}  // namespace

at::Tensor CheckpointedCall(std::function<at::Tensor(const at::Tensor&)> fn, const at::Tensor& x,
                            const std::vector<at::Tensor>& params) {
  GR_CHECK(x.defined(), kInternal, "checkpointed block called with an undefined input");
  auto state = c10::make_intrusive<Recompute>();
  state->fn = std::move(fn);
  return CheckpointFunction::apply(std::move(state), x, at::TensorList(params));
}

}  // namespace gainrag
