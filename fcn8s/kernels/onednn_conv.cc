// Stride-1 'same' convolutions and their two gradients for MindSpore on CPU, as AOT custom ops,
// run by oneDNN with the activations channels-last (NHWC) or in the layout it prefers (Layout), and for
// inference the forward with a BatchNorm's scale and shift and a ReLU fused; a 2x2
// max pooling whose forward keeps each window's winner, so that its gradient is a single pass (plain
// C++); the three matrix products of a convolution computed on its patches (conv6, conv7), on
// oneDNN's sgemm; FCN's x8 (x16, x32) upsampling, a transposed convolution, and its two gradients
// (plain C++, built a second time for AVX2 with FMA); training's BatchNorm and ReLU fused, forward and
// gradient (plain C++); and the training loss, softmax cross-entropy straight on NCHW logits (plain C++).
//
// Why: MindSpore 2.10 runs its CPU convolutions through oneDNN in NCHW. On AVX-512 hosts oneDNN
// then picks a reference-grade kernel (about 1 GFLOP/s), so fcn8s caps MindSpore's oneDNN at AVX2
// (cap_mindspore_isa in fcn8s/kernels/onednn.py). The same oneDNN, given NHWC tensors at AVX-512,
// runs its brgemm kernels 1.4-2.7x faster than MindSpore's capped ones (benchmarks/conv_kernels.py:
// 210-330 against 86-190 GFLOP/s on two cores); at AVX2 its blocked layout's are the fast ones. Each
// call reorders its NCHW inputs to the primitive's layout, runs the convolution and reorders the
// result back; the reorders are memory-bound and cheap next to the convolution.
//
// oneDNN is the libdnnl.so.3 that MindSpore ships, loaded through dlopen from the path given to
// fcn8s_onednn_init(). fcn8s passes a private copy of that file: a separate instance, which the AVX2
// cap of MindSpore's own instance does not reach, so it runs at the best ISA the CPU has (or at the
// user's ONEDNN_MAX_CPU_ISA, which oneDNN reads itself). Only the part of oneDNN's v3 C API used
// here is declared below; the values are those of oneDNN's dnnl_types.h (stable across 3.x). The scratch
// buffers (NHWC copies, blocked weights, oneDNN scratchpad) are shared by all calls and grow to the largest
// layer, so they are allocated once per process.
//
// MindSpore AOT signature: int f(int nparam, void **params, int *ndims, int64_t **shapes,
// const char **dtypes, void *stream, void *extra); params holds the inputs, then the output.
#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

namespace {

// ---- the part of oneDNN's C API used here ----
using dnnl_status_t = int;
using handle_t = void *;
struct exec_arg_t {
    int arg;
    handle_t memory;
};
constexpr int kSuccess = 0, kF32 = 3, kEngineCpu = 1, kScratchpadUser = 1;
constexpr int kTagAny = 1, kTagNCHW = 5, kTagNHWC = 22, kTagOIHW = 5;
constexpr int kForwardTraining = 64, kForwardInference = 96, kConvolutionDirect = 1, kEltwiseReLU = 0x20,
              kBinaryAdd = 0x1fff0, kBinaryMul = 0x1fff1;
constexpr int kQueryImplInfoStr = 8, kQueryScratchpadMd = 136;
constexpr int kQuerySrcMd = 129, kQueryDiffSrcMd = 130, kQueryWeightsMd = 131, kQueryDiffWeightsMd = 132,
              kQueryDstMd = 133, kQueryDiffDstMd = 134;
constexpr int kArgSrc = 1, kArgDst = 17, kArgWeights = 33, kArgScratchpad = 80, kArgDiffSrc = 129,
              kArgDiffDst = 145, kArgDiffWeights = 161;
// the per-channel operand of binary post-op i: DNNL_ARG_ATTR_MULTIPLE_POST_OP(i) | DNNL_ARG_SRC_1
constexpr int post_op_arg(int i) { return 32768 * (i + 1) | 2; }

struct Api {
    dnnl_status_t (*engine_create)(handle_t *, int, size_t);
    dnnl_status_t (*threadpool_interop_stream_create)(handle_t *, handle_t, void *);
    dnnl_status_t (*stream_wait)(handle_t);
    dnnl_status_t (*memory_desc_create_with_tag)(handle_t *, int, const int64_t *, int, int);
    int (*memory_desc_equal)(handle_t, handle_t);
    size_t (*memory_desc_get_size)(handle_t);
    dnnl_status_t (*memory_create)(handle_t *, handle_t, handle_t, void *);
    dnnl_status_t (*memory_destroy)(handle_t);
    dnnl_status_t (*primitive_attr_create)(handle_t *);
    dnnl_status_t (*primitive_attr_set_scratchpad_mode)(handle_t, int);
    dnnl_status_t (*post_ops_create)(handle_t *);
    dnnl_status_t (*post_ops_append_eltwise)(handle_t, int, float, float);
    dnnl_status_t (*post_ops_append_binary)(handle_t, int, handle_t);
    dnnl_status_t (*primitive_attr_set_post_ops)(handle_t, handle_t);
    dnnl_status_t (*convolution_forward_primitive_desc_create)(handle_t *, handle_t, int, int, handle_t, handle_t,
                                                               handle_t, handle_t, const int64_t *,
                                                               const int64_t *, const int64_t *, const int64_t *,
                                                               handle_t);
    dnnl_status_t (*convolution_backward_data_primitive_desc_create)(handle_t *, handle_t, int, handle_t, handle_t,
                                                                     handle_t, const int64_t *, const int64_t *,
                                                                     const int64_t *, const int64_t *, handle_t,
                                                                     handle_t);
    dnnl_status_t (*convolution_backward_weights_primitive_desc_create)(handle_t *, handle_t, int, handle_t,
                                                                        handle_t, handle_t, handle_t,
                                                                        const int64_t *, const int64_t *,
                                                                        const int64_t *, const int64_t *, handle_t,
                                                                        handle_t);
    dnnl_status_t (*reorder_primitive_desc_create)(handle_t *, handle_t, handle_t, handle_t, handle_t, handle_t);
    handle_t (*primitive_desc_query_md)(handle_t, int, int);
    dnnl_status_t (*primitive_desc_query)(handle_t, int, int, void *);
    dnnl_status_t (*primitive_create)(handle_t *, handle_t);
    dnnl_status_t (*primitive_execute)(handle_t, handle_t, int, const exec_arg_t *);
    dnnl_status_t (*threadpool_interop_sgemm)(char, char, int64_t, int64_t, int64_t, float, const float *, int64_t,
                                              const float *, int64_t, float, float *, int64_t, void *);
};

// Same virtual layout as dnnl::threadpool_interop::threadpool_iface (dnnl_threadpool_iface.hpp):
// MindSpore's oneDNN is built for the threadpool runtime, which runs on the pool its stream is given.
struct ThreadpoolIface {
    virtual int get_num_threads() const = 0;
    virtual bool get_in_parallel() const = 0;
    virtual void parallel_for(int n, const std::function<void(int, int)> &fn) = 0;
    virtual uint64_t get_flags() const = 0;
    virtual ~ThreadpoolIface() = default;
};

// The pool oneDNN's parallel regions run on: the calling thread and threads - 1 workers. Between regions a
// worker spins for `spin` (kSpinMicroseconds by default), then sleeps on a condition variable; the caller
// waits for the workers' shares the same way. Why the short spin: a condition variable's wake-up took about
// 70 us on the 2-core AVX2 EPYC (a VM), and a step of the demo's network runs about 250 regions, most of them
// back to back inside one operator; the spin makes that step faster, and costs the full network's, whose
// regions are longer, about what its bound allows, 100 us of a core per region (ab_pool_spin*.json in
// benchmarks/RESULTS.md: 0.92x and about 1.015x round by round on the AVX2 EPYC). Why not longer,
// or OpenMP: libgomp's workers spin far longer after each region, and the kernels run between MindSpore's own
// operators, whose thread pool then finds a core taken; on two cores that made the full network's step 10-15%
// slower (OMP_WAIT_POLICY=ACTIVE, which spins without end, made the narrow network's twice as slow). A region
// is shared statically: the caller runs i = 0, threads, 2 x threads, ..., worker t runs i = t, t + threads,
// ...  Calls are serialised by `mutex` (run), so one region runs at a time; a nested region runs on its
// caller. A process forked after the workers started has none of them, and its copies of their mutex and
// condition variables may be held by threads that do not exist there: it starts its own workers on new ones
// on first use.
constexpr double kSpinMicroseconds = 100;

struct SleepingPool final : ThreadpoolIface {
    int threads = 1;
    std::atomic<double> spin{kSpinMicroseconds * 1e-6};   // seconds; fcn8s_set_pool_spin sets it
    int get_num_threads() const override { return threads; }
    bool get_in_parallel() const override { return in_region; }
    uint64_t get_flags() const override { return 0; }  // synchronous

    void parallel_for(int n, const std::function<void(int, int)> &fn) override {
        if (threads == 1 || n <= 1 || in_region) {
            for (int i = 0; i < n; ++i) fn(i, n);
            return;
        }
        Workers &w = workers();
        w.job = &fn;   // published by the release of generation below, read after its acquire
        w.job_n = n;
        w.pending.store(threads - 1, std::memory_order_relaxed);
        {
            std::lock_guard<std::mutex> lock(w.m);   // a worker that sleeps checks generation under it
            w.generation.fetch_add(1, std::memory_order_release);
        }
        w.wake.notify_all();
        run_share(0, n, fn);
        if (!spin_until([&w] { return w.pending.load(std::memory_order_acquire) == 0; })) {
            std::unique_lock<std::mutex> lock(w.m);
            w.done.wait(lock, [&w] { return w.pending.load(std::memory_order_acquire) == 0; });
        }
    }

  private:
    struct Workers {   // never freed: its threads sleep on it until the process ends
        std::mutex m;
        std::condition_variable wake, done;
        const std::function<void(int, int)> *job = nullptr;
        int job_n = 0;
        std::atomic<int> pending{0};
        std::atomic<uint64_t> generation{0};
    };
    static thread_local bool in_region;
    Workers *current = nullptr;
    pid_t owner = 0;   // the process whose threads serve `current`

    // Whether ready() became true within `spin` seconds of spinning.
    template <typename Ready>
    bool spin_until(const Ready &ready) const {
        if (ready()) return true;
        const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(spin.load());
        while (std::chrono::steady_clock::now() < until) {
            if (ready()) return true;
            __builtin_ia32_pause();
        }
        return ready();
    }

    void run_share(int t, int n, const std::function<void(int, int)> &fn) {
        in_region = true;
        for (int i = t; i < n; i += threads) fn(i, n);
        in_region = false;
    }

    Workers &workers() {
        if (owner != getpid()) {
            owner = getpid();
            current = new Workers;
            for (int t = 1; t < threads; ++t) std::thread([this, t, w = current] { work(t, *w); }).detach();
        }
        return *current;
    }

    void work(int t, Workers &w) {
        uint64_t seen = 0;
        for (;;) {
            auto posted = [&] { return w.generation.load(std::memory_order_acquire) != seen; };
            if (!spin_until(posted)) {
                std::unique_lock<std::mutex> lock(w.m);
                w.wake.wait(lock, posted);
            }
            seen = w.generation.load(std::memory_order_acquire);
            run_share(t, w.job_n, *w.job);
            if (w.pending.fetch_sub(1, std::memory_order_acq_rel) == 1) {
                std::lock_guard<std::mutex> lock(w.m);   // the caller, if it sleeps, checks pending under it
                w.done.notify_one();
            }
        }
    }
};
thread_local bool SleepingPool::in_region = false;

// ---- state ----
Api api;
// scratchpad_attr: the scratchpad is ours (buffers below)
handle_t engine = nullptr, stream = nullptr, scratchpad_attr = nullptr;
SleepingPool pool;
std::mutex mutex;
std::string last_error = "fcn8s_onednn_init was not called";

bool fail(const std::string &what) {
    last_error = what;
    std::fprintf(stderr, "fcn8s onednn_conv: %s\n", what.c_str());
    return false;
}

#define CHECK(call)                                                       \
    do {                                                                  \
        dnnl_status_t status_ = (call);                                   \
        if (status_ != kSuccess)                                          \
            return fail(std::string(#call) + " -> status " + std::to_string(status_)); \
    } while (0)

// 64-byte aligned buffers that only grow; reserve() returns nullptr when out of memory.
struct Buffer {
    void *data = nullptr;
    size_t size = 0;
    void *reserve(size_t bytes) {
        if (bytes > size) {
            std::free(data);
            size_t rounded = (bytes + 63) / 64 * 64;
            data = std::aligned_alloc(64, rounded);
            size = data ? rounded : 0;
        }
        return data;
    }
};
enum Slot { kSlotSrc, kSlotWeights, kSlotDst, kSlotScratchpad, kNumSlots };
Buffer buffers[kNumSlots];

// kForwardBNReLU: inference only, relu(conv(x, weight) * scale + shift) per output channel: a BatchNorm's
// moving statistics as scale and shift, applied with the ReLU as oneDNN post-ops on the way out
enum Op { kForward, kBackwardData, kBackwardWeights, kForwardBNReLU };
// The activations' layout inside the primitive: channels-last, or the one oneDNN prefers for the shape and
// ISA (format tag any: on AVX2 its blocked nChw8c, whose weight gradient runs 2-3x faster there than the
// NHWC one; at AVX-512 its NHWC brgemm kernels). Which is faster is measured per host (probe.py).
enum Layout { kChannelsLast, kOneDNNChoice };

// One argument of a convolution: the layout MindSpore holds it in, the layout the primitive
// wants, and the reorder between them when they differ.
struct Arg {
    int dnnl_arg;
    bool is_output;
    handle_t user_md = nullptr, primitive_md = nullptr, reorder = nullptr;
    Slot slot;
};

// A plan lives as long as the process (one per layer shape), so its oneDNN descriptors, which the
// memory descriptors above point into, are never freed.
struct Plan {
    handle_t primitive = nullptr;
    handle_t scratchpad_md = nullptr;
    size_t scratchpad_size = 0;
    Arg args[5];   // the inputs, then the output
    int nargs = 3;
    std::string impl;
};
std::map<std::tuple<int, int, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t>, Plan> plans;

// New primitive attributes whose scratchpad is ours (the buffers above) rather than oneDNN's own.
bool user_scratchpad_attr(handle_t *attr) {
    return api.primitive_attr_create(attr) == kSuccess &&
           api.primitive_attr_set_scratchpad_mode(*attr, kScratchpadUser) == kSuccess;
}

bool make_md(handle_t *md, int64_t a, int64_t b, int64_t c, int64_t d, int tag) {
    const int64_t dims[4] = {a, b, c, d};
    CHECK(api.memory_desc_create_with_tag(md, 4, dims, kF32, tag));
    return true;
}

bool make_arg(Arg *arg, handle_t pd, int dnnl_arg, int query, handle_t user_md, bool is_output, Slot slot) {
    arg->dnnl_arg = dnnl_arg;
    arg->is_output = is_output;
    arg->user_md = user_md;
    arg->slot = slot;
    arg->primitive_md = api.primitive_desc_query_md(pd, query, 0);
    if (api.memory_desc_equal(user_md, arg->primitive_md)) return true;
    handle_t reorder_pd;
    handle_t from = is_output ? arg->primitive_md : user_md, to = is_output ? user_md : arg->primitive_md;
    CHECK(api.reorder_primitive_desc_create(&reorder_pd, from, engine, to, engine, nullptr));
    CHECK(api.primitive_create(&arg->reorder, reorder_pd));
    return true;
}

// Builds the primitive for (op, layout, n, c, o, h, w, k): x is (n, c, h, w), weight (o, c, k, k),
// y (n, o, h, w), scale and shift (o); x_inner and y_inner are the activations' layout inside the primitive.
bool make_plan(Plan *plan, int op, int layout, int64_t n, int64_t c, int64_t o, int64_t h, int64_t w, int64_t k) {
    handle_t x_user, y_user, w_user, x_inner, y_inner, w_any, per_channel;
    const int inner_tag = layout == kChannelsLast ? kTagNHWC : kTagAny;
    if (!make_md(&x_user, n, c, h, w, kTagNCHW) || !make_md(&y_user, n, o, h, w, kTagNCHW) ||
        !make_md(&w_user, o, c, k, k, kTagOIHW) || !make_md(&x_inner, n, c, h, w, inner_tag) ||
        !make_md(&y_inner, n, o, h, w, inner_tag) || !make_md(&w_any, o, c, k, k, kTagAny) ||
        !make_md(&per_channel, 1, o, 1, 1, kTagNCHW))
        return false;
    const int64_t strides[2] = {1, 1}, dilates[2] = {0, 0}, pad[2] = {k / 2, k / 2};
    handle_t forward_pd, pd;
    if (op == kForwardBNReLU) {
        handle_t attr, post_ops;
        if (!user_scratchpad_attr(&attr)) return fail("cannot create primitive attributes");
        CHECK(api.post_ops_create(&post_ops));
        CHECK(api.post_ops_append_binary(post_ops, kBinaryMul, per_channel));
        CHECK(api.post_ops_append_binary(post_ops, kBinaryAdd, per_channel));
        CHECK(api.post_ops_append_eltwise(post_ops, kEltwiseReLU, 0.0f, 0.0f));
        CHECK(api.primitive_attr_set_post_ops(attr, post_ops));
        CHECK(api.convolution_forward_primitive_desc_create(&pd, engine, kForwardInference, kConvolutionDirect, x_inner,
                                                            w_any, nullptr, y_inner, strides, dilates, pad, pad, attr));
        plan->nargs = 5;
        if (!make_arg(&plan->args[0], pd, kArgSrc, kQuerySrcMd, x_user, false, kSlotSrc) ||
            !make_arg(&plan->args[1], pd, kArgWeights, kQueryWeightsMd, w_user, false, kSlotWeights) ||
            !make_arg(&plan->args[4], pd, kArgDst, kQueryDstMd, y_user, true, kSlotDst))
            return false;
        for (int i = 0; i < 2; ++i)   // the scale and shift, (o) tensors read as (1, o, 1, 1) as they are
            plan->args[2 + i] = {post_op_arg(i), false, per_channel, per_channel, nullptr, kSlotSrc};
    } else {
        CHECK(api.convolution_forward_primitive_desc_create(&forward_pd, engine, kForwardTraining, kConvolutionDirect,
                                                            x_inner, w_any, nullptr, y_inner, strides, dilates, pad,
                                                            pad, scratchpad_attr));
    }
    if (op == kForward) {
        pd = forward_pd;
        if (!make_arg(&plan->args[0], pd, kArgSrc, kQuerySrcMd, x_user, false, kSlotSrc) ||
            !make_arg(&plan->args[1], pd, kArgWeights, kQueryWeightsMd, w_user, false, kSlotWeights) ||
            !make_arg(&plan->args[2], pd, kArgDst, kQueryDstMd, y_user, true, kSlotDst))
            return false;
    } else if (op == kBackwardData) {
        CHECK(api.convolution_backward_data_primitive_desc_create(&pd, engine, kConvolutionDirect, x_inner, w_any,
                                                                  y_inner, strides, dilates, pad, pad, forward_pd,
                                                                  scratchpad_attr));
        if (!make_arg(&plan->args[0], pd, kArgDiffDst, kQueryDiffDstMd, y_user, false, kSlotDst) ||
            !make_arg(&plan->args[1], pd, kArgWeights, kQueryWeightsMd, w_user, false, kSlotWeights) ||
            !make_arg(&plan->args[2], pd, kArgDiffSrc, kQueryDiffSrcMd, x_user, true, kSlotSrc))
            return false;
    } else if (op == kBackwardWeights) {
        CHECK(api.convolution_backward_weights_primitive_desc_create(&pd, engine, kConvolutionDirect, x_inner, w_any,
                                                                     nullptr, y_inner, strides, dilates, pad, pad,
                                                                     forward_pd, scratchpad_attr));
        if (!make_arg(&plan->args[0], pd, kArgSrc, kQuerySrcMd, x_user, false, kSlotSrc) ||
            !make_arg(&plan->args[1], pd, kArgDiffDst, kQueryDiffDstMd, y_user, false, kSlotDst) ||
            !make_arg(&plan->args[2], pd, kArgDiffWeights, kQueryDiffWeightsMd, w_user, true, kSlotWeights))
            return false;
    }
    const char *impl = nullptr;
    CHECK(api.primitive_desc_query(pd, kQueryImplInfoStr, 0, &impl));
    plan->impl = impl ? impl : "?";
    plan->scratchpad_md = api.primitive_desc_query_md(pd, kQueryScratchpadMd, 0);
    plan->scratchpad_size = plan->scratchpad_md ? api.memory_desc_get_size(plan->scratchpad_md) : 0;
    CHECK(api.primitive_create(&plan->primitive, pd));
    return true;
}

Plan *find_plan(int op, int layout, int64_t n, int64_t c, int64_t o, int64_t h, int64_t w, int64_t k) {
    auto key = std::make_tuple(op, layout, n, c, o, h, w, k);
    auto found = plans.find(key);
    if (found != plans.end()) return &found->second;
    Plan plan;
    if (!make_plan(&plan, op, layout, n, c, o, h, w, k)) return nullptr;
    return &plans.emplace(key, plan).first->second;
}

bool memory(handle_t *mem, handle_t md, void *data) {
    CHECK(api.memory_create(mem, md, engine, data));
    return true;
}

bool run_reorder(handle_t reorder, handle_t from, handle_t to) {
    const exec_arg_t args[2] = {{kArgSrc, from}, {kArgDst, to}};
    CHECK(api.primitive_execute(reorder, stream, 2, args));
    return true;
}

// Runs plan on MindSpore's NCHW/OIHW tensors data[0..nargs-1] (the inputs, then the output).
bool execute(Plan *plan, void *const data[]) {
    std::vector<handle_t> owned;  // memory objects are cheap wrappers, made per call
    auto wrap = [&](handle_t md, void *ptr, handle_t *mem) {
        if (!ptr) return fail("out of memory for a scratch buffer");
        if (!memory(mem, md, ptr)) return false;
        owned.push_back(*mem);
        return true;
    };
    exec_arg_t args[6];
    handle_t user[5], inner[5];
    bool ok = true;
    const int out = plan->nargs - 1;
    for (int i = 0; i < plan->nargs && ok; ++i) {
        const Arg &arg = plan->args[i];
        ok = wrap(arg.user_md, data[i], &user[i]);
        inner[i] = user[i];
        if (ok && arg.reorder) {
            void *buffer = buffers[arg.slot].reserve(api.memory_desc_get_size(arg.primitive_md));
            ok = wrap(arg.primitive_md, buffer, &inner[i]) &&
                 (arg.is_output || run_reorder(arg.reorder, user[i], inner[i]));
        }
        args[i] = {arg.dnnl_arg, inner[i]};
    }
    int nargs = plan->nargs;
    if (ok && plan->scratchpad_size) {
        handle_t scratchpad;
        ok = wrap(plan->scratchpad_md, buffers[kSlotScratchpad].reserve(plan->scratchpad_size), &scratchpad);
        args[nargs++] = {kArgScratchpad, scratchpad};
    }
    if (ok) {
        dnnl_status_t status = api.primitive_execute(plan->primitive, stream, nargs, args);
        ok = status == kSuccess || fail("convolution -> status " + std::to_string(status));
    }
    if (ok && plan->args[out].reorder) ok = run_reorder(plan->args[out].reorder, inner[out], user[out]);
    if (ok) ok = api.stream_wait(stream) == kSuccess || fail("stream wait failed");
    for (handle_t mem : owned) api.memory_destroy(mem);
    return ok;
}

template <typename F>
bool load(void *lib, const char *name, F *fn) {
    *fn = reinterpret_cast<F>(dlsym(lib, name));
    return *fn || fail(std::string("symbol ") + name + " not found in oneDNN");
}

// shapes[0] is x or dout, shapes[1] the weight or dout, then scale and shift (kForwardBNReLU), then the output;
// see the entry points.
int run(int op, int layout, int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
    std::lock_guard<std::mutex> lock(mutex);
    if (!stream) return fail(last_error), 1;
    const bool bn = op == kForwardBNReLU;
    if (nparam != (bn ? 5 : 3))
        return fail(bn ? "expected 4 inputs and 1 output" : "expected 2 inputs and 1 output"), 1;
    for (int i = 0; i < nparam; ++i) {
        if (ndims[i] != (bn && (i == 2 || i == 3) ? 1 : 4))
            return fail("expected 4-D tensors (and a 1-D scale and shift)"), 1;
        if (std::strcmp(dtypes[i], "float32") != 0) return fail(std::string("float32 only, got ") + dtypes[i]), 1;
    }
    // x (n, c, h, w), weight (o, c, k, k) and y (n, o, h, w), whichever of the params holds them.
    // Nothing upstream checks that they agree (the op's out_shape function only derives the output's), and
    // a mismatch, such as an input with other channels than the weight, would read or write past a buffer.
    const int64_t *x = shapes[op == kBackwardData ? 2 : 0];
    const int64_t *weight = shapes[op == kBackwardWeights ? 2 : 1];
    const int64_t *y = shapes[op == kForward ? 2 : op == kBackwardData ? 0 : op == kBackwardWeights ? 1 : 4];
    bool agree = x[0] == y[0] && x[1] == weight[1] && weight[0] == y[1] && x[2] == y[2] && x[3] == y[3] &&
                 weight[2] == weight[3] && weight[2] % 2 == 1 &&
                 (!bn || (shapes[2][0] == weight[0] && shapes[3][0] == weight[0]));
    if (!agree) {
        auto dims = [](const int64_t *s) {
            return "(" + std::to_string(s[0]) + ", " + std::to_string(s[1]) + ", " + std::to_string(s[2]) + ", " +
                   std::to_string(s[3]) + ")";
        };
        return fail("shapes disagree: x " + dims(x) + ", weight " + dims(weight) + ", y " + dims(y) +
                    " (expected x (n, c, h, w), weight (o, c, k, k) with k odd, y (n, o, h, w), scale and shift (o))"), 1;
    }
    Plan *plan = find_plan(op, layout, x[0], x[1], weight[0], x[2], x[3], weight[2]);
    return plan && execute(plan, params) ? 0 : 1;
}


// 2x2, stride-2 max pooling, 'valid' like nn.MaxPool2d(2, 2): an odd last row or column is dropped.
// The forward also writes which input of each window won (0-3, row-major, the first on ties), so the
// gradient is one pass that writes each input once; MindSpore's MaxPoolGrad searches every window
// again from the input and output (benchmarks/profile_step.py shows both). Planes (image, channel)
// are split evenly over the pool's threads.
bool pool_shapes_agree(int nparam, int expected, int *ndims, int64_t **shapes, const char **dtypes, int full,
                       int pooled, int winner) {
    if (nparam != expected) return fail("max pool: expected " + std::to_string(expected) + " params");
    for (int i = 0; i < nparam; ++i)
        if (ndims[i] != 4) return fail("max pool: expected 4-D tensors");
    if (std::strcmp(dtypes[full], "float32") != 0 || std::strcmp(dtypes[pooled], "float32") != 0 ||
        std::strcmp(dtypes[winner], "uint8") != 0)
        return fail("max pool: expected float32 values and uint8 winners");
    const int64_t *x = shapes[full], *y = shapes[pooled], *k = shapes[winner];
    for (int d = 0; d < 4; ++d)
        if (y[d] != k[d]) return fail("max pool: the pooled values and winners differ in shape");
    if (x[0] != y[0] || x[1] != y[1] || x[2] / 2 != y[2] || x[3] / 2 != y[3])
        return fail("max pool: the output is not the input's 2x2 pooling");
    return true;
}

// The gemm_* ops' three tensors, by their index in params: the weight (o, c, k, k) (any rank >= 2, read
// as (o, K)), the patches cols (n, K, P) and the (n, o, P) one (y or dy). Sets o, K, n and P if they agree.
bool gemm_shapes(int nparam, int *ndims, int64_t **shapes, const char **dtypes, int weight, int cols, int nop,
                 int64_t *o, int64_t *kk, int64_t *n, int64_t *p) {
    if (nparam != 3) return fail("gemm: expected 2 inputs and 1 output");
    for (int i = 0; i < 3; ++i)
        if (std::strcmp(dtypes[i], "float32") != 0) return fail(std::string("gemm: float32 only, got ") + dtypes[i]);
    if (ndims[weight] < 2 || ndims[cols] != 3 || ndims[nop] != 3)
        return fail("gemm: expected a weight (o, ...), patches (n, K, P) and an (n, o, P) tensor");
    *o = shapes[weight][0];
    *kk = 1;
    for (int d = 1; d < ndims[weight]; ++d) *kk *= shapes[weight][d];
    *n = shapes[cols][0];
    *p = shapes[cols][2];
    const int64_t *y = shapes[nop];
    if (shapes[cols][1] != *kk || y[0] != *n || y[1] != *o || y[2] != *p)
        return fail("gemm: shapes disagree (expected a weight (o, K...), patches (n, K, P), (n, o, P))");
    return true;
}

// Runs fn(p) for p = 0..count-1, split evenly over the pool's threads (a single task on the calling thread, no
// worker woken); the caller holds the library's lock.
template <typename F>
void parallel_split(int64_t count, const F &fn) {
    if (count == 1) return fn(0);
    pool.parallel_for(pool.threads, [&](int i, int n) {
        for (int64_t p = count * i / n; p < count * (i + 1) / n; ++p) fn(p);
    });
}

template <typename F>
void for_planes(int64_t planes, const F &plane_fn) {
    std::lock_guard<std::mutex> lock(mutex);
    parallel_split(planes, plane_fn);
}

// The library's own loops (the loss, the upsampling, training's BatchNorm) are written once and built twice: for
// AVX2 with FMA, and for the baseline x86-64 the library is compiled for (SSE2), where GCC splits each 8-float
// vector operation (built so, the BatchNorm made the demo's step no faster than MindSpore's kernels:
// benchmarks/plan_step_ab.py --baseline-build). vectorised(f) runs f inlined ("flatten") into the build
// this CPU can run.
bool baseline_build_only = false;   // set by fcn8s_baseline_build() (tests run both builds)

bool cpu_has_avx2_fma() {
    static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return has;
}

template <typename F>
__attribute__((target("avx2,fma"), flatten)) void run_avx2_fma(const F &f) { f(); }

template <typename F>
__attribute__((flatten)) void run_baseline(const F &f) { f(); }

bool runs_avx2_fma_build() { return cpu_has_avx2_fma() && !baseline_build_only; }

template <typename F>
void vectorised(const F &f) {
    if (runs_avx2_fma_build())
        run_avx2_fma(f);
    else
        run_baseline(f);
}

// for_planes with each plane's work in the build this CPU can run (vectorised)
template <typename F>
void for_planes_vectorised(int64_t planes, const F &plane_fn) {
    for_planes(planes, [&](int64_t p) { vectorised([&] { plane_fn(p); }); });
}

// Copies src (a, b, p) to dst (b, a, p): the images' matrices side by side, (n, R, P) -> (R, n P), and back.
void swap_leading(const float *src, float *dst, int64_t a, int64_t b, int64_t p) {
    parallel_split(b, [&](int64_t j) {
        for (int64_t i = 0; i < a; ++i) std::memcpy(dst + (j * a + i) * p, src + (i * b + j) * p, sizeof(float) * p);
    });
}

// An (n, R, P) tensor as the (R, n P) matrix the gemm_* ops multiply: one sgemm for all the images reads the
// weight once (conv6's is 400 MB at full width) where one per image reads it n times, and its product has
// n P columns, not P (16 at the demo's 128²). For one image both are the tensor itself; else a scratch copy.
struct SideBySide {
    float *data;
    const float *tensor;
    int64_t n, rows, p;
    SideBySide(const float *tensor, int64_t n, int64_t rows, int64_t p, Slot slot, bool copy_in)
        : tensor(tensor), n(n), rows(rows), p(p) {
        data = n == 1 ? const_cast<float *>(tensor)
                      : static_cast<float *>(buffers[slot].reserve(sizeof(float) * n * rows * p));
        if (data && copy_in && n > 1) swap_leading(tensor, data, n, rows, p);
    }
    void copy_out() { if (n > 1) swap_leading(data, const_cast<float *>(tensor), rows, n, p); }
};

// Runs sgemm under the library's lock on the gemm_* ops' matrices, written back to `out` after; 0, or 1 with
// the error recorded.
template <typename F>
int sgemm_locked(const F &sgemm, SideBySide *out) {
    dnnl_status_t status = sgemm();
    if (status != kSuccess) return fail("sgemm -> status " + std::to_string(status)), 1;
    if (out) out->copy_out();
    return 0;
}

// dst (cols, rows) = src (rows, cols) transposed, in square tiles split over the pool's threads by column.
void transpose(const float *src, float *dst, int64_t rows, int64_t cols) {
    constexpr int64_t kTile = 32;
    parallel_split((cols + kTile - 1) / kTile, [&](int64_t t) {
        const int64_t c0 = t * kTile, c1 = std::min(cols, c0 + kTile);
        for (int64_t r0 = 0; r0 < rows; r0 += kTile) {
            const int64_t r1 = std::min(rows, r0 + kTile);
            for (int64_t c = c0; c < c1; ++c)
                for (int64_t r = r0; r < r1; ++r) dst[c * rows + r] = src[r * cols + c];
        }
    });
}

// ---- the training loss: per-pixel softmax cross-entropy of NCHW logits (cross_entropy_*) ----
// e^x, inline so that the compiler vectorizes the class loops that call it (libm's expf is a call per
// element): e^x = 2^n e^r with n = round(x / ln 2) and |r| <= ln 2 / 2, e^r by Cephes' expf polynomial
// (within about 1 ulp). x is clamped to [-87, 88], where 2^n is a normal float; NaN stays NaN.
inline float exp_approx(float x) {
    x = std::min(std::max(x, -87.0f), 88.0f);   // in this argument order, NaN comes back as NaN
    constexpr float kRound = 12582912.0f;   // 1.5 * 2^23: adding it leaves round(x / ln 2) in the low bits
    const float shifted = x * 1.44269504f + kRound;
    const float n = shifted - kRound;
    const float r = x - n * 0.693359375f + n * 2.12194440e-4f;   // x - n ln 2, ln 2 in two parts (Cody-Waite)
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits;
    std::memcpy(&bits, &shifted, sizeof bits);
    const int32_t scale_bits = (bits - 0x4b400000 + 127) << 23;   // 2^n: 0x4b400000 is kRound's bits
    float scale;
    std::memcpy(&scale, &scale_bits, sizeof scale);
    return p * scale;
}

// The loss kernels' work is split into tiles of up to kPixelTile pixels of one image; each tile's class loops
// run over its pixels (contiguous in NCHW), which the compiler vectorizes.
constexpr int64_t kPixelTile = 64;

struct PixelTiles {
    int64_t classes, pixels, per_image;
    // a tile's first element in (n, C, h, w) class 0, its first pixel in (n, h, w), and its pixel count
    void at(int64_t tile, int64_t *logit0, int64_t *pixel0, int64_t *len) const {
        const int64_t image = tile / per_image, start = tile % per_image * kPixelTile;
        *logit0 = image * classes * pixels + start;
        *pixel0 = image * pixels + start;
        *len = std::min(kPixelTile, pixels - start);
    }
};

// Checks the loss kernels' first three params, logits (n, C, h, w) float32, labels (n, h, w) int32 and the
// ignore label (1,) int32, and the (n, h, w) float32 one at lse; sets the tiles.
bool loss_shapes(int nparam, int expected, int *ndims, int64_t **shapes, const char **dtypes, int lse,
                 PixelTiles *tiles, int64_t *count) {
    if (nparam != expected) return fail("cross entropy: expected " + std::to_string(expected) + " tensors");
    const int64_t *x = shapes[0], *y = shapes[1];
    if (ndims[0] != 4 || std::strcmp(dtypes[0], "float32") != 0)
        return fail("cross entropy: logits must be float32 (n, C, h, w)");
    if (ndims[1] != 3 || std::strcmp(dtypes[1], "int32") != 0 || y[0] != x[0] || y[1] != x[2] || y[2] != x[3])
        return fail("cross entropy: labels must be int32 (n, h, w), the logits' n, h and w");
    if (ndims[2] != 1 || shapes[2][0] != 1 || std::strcmp(dtypes[2], "int32") != 0)
        return fail("cross entropy: the ignore label must be one int32");
    if (ndims[lse] != 3 || std::strcmp(dtypes[lse], "float32") != 0 || shapes[lse][0] != x[0] ||
        shapes[lse][1] != x[2] || shapes[lse][2] != x[3])
        return fail("cross entropy: the log-sum-exp must be float32 (n, h, w)");
    const int64_t pixels = x[2] * x[3];
    *tiles = {x[1], pixels, (pixels + kPixelTile - 1) / kPixelTile};
    *count = x[0] * tiles->per_image;
    return true;
}

// ---- upsampling: FCN's transposed convolutions by a factor s that is a multiple of 8 (upsample_*) ----
// nn.Conv2dTranspose(C, O, 2s, stride s, pad_mode 'same') on x (n, C, h, w) with weight (C, O, 2s, 2s): y (n, O,
// s h, s w), padding p = s / 2. Output row Y takes input rows a = (Y + p) / s and a - 1 with kernel rows
// r = (Y + p) % s and r + s, and likewise for columns, so each output pixel is a sum over C x 2 x 2 products
// (FCN-8s's upscore8: 21 x 4 multiply-adds per output channel). MindSpore runs the op and its gradients as
// general convolutions at 20-28 GFLOP/s here (benchmarks/upsample_kernel.py); these loops keep 12 vectors
// of 8 sums in registers (a 3 x 4 or 4 x 3 block) and run at the CPU's AVX2 with FMA where it has them.
typedef float v8 __attribute__((vector_size(32), aligned(4)));   // GCC/Clang generic vector: 8 floats
constexpr int64_t kLanes = 8;
// register blocks: output channels x output column tiles (forward), input channels x input columns (input
// gradient), input channels x output channels (weight gradient)
constexpr int64_t kBlockC = 4, kBlockO = 3, kBlockTiles = 4, kBlockColumns = 3;

inline v8 load8(const float *p) { return *reinterpret_cast<const v8 *>(p); }
inline void store8(float *p, v8 v) { *reinterpret_cast<v8 *>(p) = v; }
inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

enum UpsampleOp { kUpsampleForward, kUpsampleInputGrad, kUpsampleWeightGrad };

struct Upsampling {
    int64_t n, c, o, h, w, s;   // x (n, c, h, w), weight (c, o, 2 s, 2 s), y (n, o, s h, s w)
    int64_t cp, op;             // c and o rounded up to the register blocks: the padded weight's shape
    int64_t k() const { return 2 * s; }
    int64_t pad() const { return s / 2; }
    // forward: output columns X + p in tiles of s, each reading input columns t and t - 1; x padded with a
    // zero row and column before and zeros after to a whole block of tiles
    int64_t tiles() const { return round_up(w + 1, kBlockTiles); }
    int64_t padded_x_columns() const { return tiles() + 2; }
    // gradients: dy's 2s rows under one input row, all channels, padded by p on both sides and to a whole
    // block of columns (a strip, built per input row)
    int64_t strip_columns() const { return (round_up(w, kBlockColumns) + 1) * s; }
    int64_t strip_size() const { return op * k() * strip_columns(); }
    int64_t weight_size() const { return cp * op * k() * k(); }
};

// The tensors of one upsample op; `out` is y, dx or dweight (the threads' sums, added in upsample()).
struct UpsampleTensors {
    const float *x;    // forward: x padded (n, c, h + 2, padded_x_columns); weight gradient: x (n, c, h, w)
    const float *dy;   // (n, o, s h, s w)
    const float *wp;   // the weight padded to (cp, op, k, k) with zeros (forward, input gradient)
    float *out;
};

inline void upsample_forward_rows(const Upsampling &u, const UpsampleTensors &t, float *row, int64_t begin,
                                 int64_t end) {
    const int64_t s = u.s, k = u.k(), p = u.pad(), height = u.h * s, width = u.w * s, xw = u.padded_x_columns();
    const int64_t row_length = u.tiles() * s;
    for (int64_t r = begin; r < end; ++r) {
        const int64_t image = r / height, y = r % height, a = (y + p) / s, ky = (y + p) % s;
        for (int64_t o0 = 0; o0 < u.op; o0 += kBlockO)
            for (int64_t t0 = 0; t0 < u.tiles(); t0 += kBlockTiles)
                for (int64_t q = 0; q < s; q += kLanes) {
                    v8 sums[kBlockO][kBlockTiles] = {};
                    for (int64_t ci = 0; ci < u.c; ++ci)
                        for (int64_t up = 0; up < 2; ++up) {   // input rows a and a - 1
                            const float *x = t.x + ((image * u.c + ci) * (u.h + 2) + a - up + 1) * xw + t0 + 1;
                            for (int64_t left = 0; left < 2; ++left) {   // input columns t and t - 1
                                const float *weight = t.wp + ((ci * u.op + o0) * k + ky + up * s) * k + left * s + q;
                                v8 wv[kBlockO];
                                for (int64_t i = 0; i < kBlockO; ++i) wv[i] = load8(weight + i * k * k);
                                for (int64_t j = 0; j < kBlockTiles; ++j) {
                                    const float xv = x[j - left];
                                    for (int64_t i = 0; i < kBlockO; ++i) sums[i][j] += xv * wv[i];
                                }
                            }
                        }
                    for (int64_t i = 0; i < kBlockO; ++i)
                        for (int64_t j = 0; j < kBlockTiles; ++j)
                            store8(row + (o0 + i) * row_length + (t0 + j) * s + q, sums[i][j]);
                }
        for (int64_t oi = 0; oi < u.o; ++oi)
            std::memcpy(t.out + ((image * u.o + oi) * height + y) * width, row + oi * row_length + p,
                        sizeof(float) * width);
    }
}

// strip (op, k, strip_columns): strip[o][ky][X + p] = dy[image, o, iy s - p + ky, X], zero outside dy
inline void upsample_strip(const Upsampling &u, const float *dy, int64_t image, int64_t iy, float *strip) {
    const int64_t s = u.s, k = u.k(), p = u.pad(), height = u.h * s, width = u.w * s, columns = u.strip_columns();
    std::memset(strip, 0, sizeof(float) * u.strip_size());
    for (int64_t oi = 0; oi < u.o; ++oi)
        for (int64_t ky = 0; ky < k; ++ky) {
            const int64_t y = iy * s - p + ky;
            if (y >= 0 && y < height)
                std::memcpy(strip + (oi * k + ky) * columns + p, dy + ((image * u.o + oi) * height + y) * width,
                            sizeof(float) * width);
        }
}

// dx[image, c, iy, ix] = sum over o, ky, kx of strip[o][ky][ix s + kx] weight[c, o, ky, kx]: 8 kx a vector
inline void upsample_input_grad_row(const Upsampling &u, const UpsampleTensors &t, const float *strip,
                                   int64_t image, int64_t iy) {
    const int64_t s = u.s, k = u.k(), columns = u.strip_columns();
    for (int64_t c0 = 0; c0 < u.cp; c0 += kBlockC)
        for (int64_t x0 = 0; x0 < u.w; x0 += kBlockColumns) {
            v8 sums[kBlockC][kBlockColumns] = {};
            for (int64_t oi = 0; oi < u.op; ++oi)
                for (int64_t ky = 0; ky < k; ++ky) {
                    const float *dy = strip + (oi * k + ky) * columns + x0 * s;
                    const float *weight = t.wp + ((c0 * u.op + oi) * k + ky) * k;
                    for (int64_t q = 0; q < k; q += kLanes) {
                        v8 dv[kBlockColumns];
                        for (int64_t j = 0; j < kBlockColumns; ++j) dv[j] = load8(dy + j * s + q);
                        for (int64_t i = 0; i < kBlockC; ++i) {
                            const v8 wv = load8(weight + i * u.op * k * k + q);
                            for (int64_t j = 0; j < kBlockColumns; ++j) sums[i][j] += wv * dv[j];
                        }
                    }
                }
            for (int64_t i = 0; i < kBlockC && c0 + i < u.c; ++i)
                for (int64_t j = 0; j < kBlockColumns && x0 + j < u.w; ++j) {
                    float sum = 0.0f;
                    for (int64_t l = 0; l < kLanes; ++l) sum += sums[i][j][l];
                    t.out[((image * u.c + c0 + i) * u.h + iy) * u.w + x0 + j] = sum;
                }
        }
}

// sums (cp, op, k, k) += x[image, c, iy, ix] strip[o][ky][ix s + kx] over ix; x_row (cp, w) is x's row iy
inline void upsample_weight_grad_row(const Upsampling &u, const float *strip, const float *x_row,
                                    float *grad) {
    const int64_t s = u.s, k = u.k(), columns = u.strip_columns();
    for (int64_t c0 = 0; c0 < u.cp; c0 += kBlockC)
        for (int64_t o0 = 0; o0 < u.op; o0 += kBlockO)
            for (int64_t ky = 0; ky < k; ++ky)
                for (int64_t q = 0; q < k; q += kLanes) {
                    float *g = grad + ((c0 * u.op + o0) * k + ky) * k + q;
                    v8 sums[kBlockC][kBlockO];
                    for (int64_t i = 0; i < kBlockC; ++i)
                        for (int64_t j = 0; j < kBlockO; ++j) sums[i][j] = load8(g + (i * u.op + j) * k * k);
                    for (int64_t ix = 0; ix < u.w; ++ix) {
                        v8 dv[kBlockO];
                        for (int64_t j = 0; j < kBlockO; ++j)
                            dv[j] = load8(strip + ((o0 + j) * k + ky) * columns + ix * s + q);
                        for (int64_t i = 0; i < kBlockC; ++i) {
                            const float xv = x_row[(c0 + i) * u.w + ix];
                            for (int64_t j = 0; j < kBlockO; ++j) sums[i][j] += xv * dv[j];
                        }
                    }
                    for (int64_t i = 0; i < kBlockC; ++i)
                        for (int64_t j = 0; j < kBlockO; ++j) store8(g + (i * u.op + j) * k * k, sums[i][j]);
                }
}

// One thread's share of an upsample op: rows [begin, end) of y (forward) or of x (the gradients), with its
// scratch (scratch_floats(op) floats) and, for the weight gradient, its sums at `grad`.
inline void upsample_share(int op, const Upsampling &u, const UpsampleTensors &t, float *scratch, float *grad,
                          int64_t begin, int64_t end) {
    if (op == kUpsampleForward) return upsample_forward_rows(u, t, scratch, begin, end);
    if (op == kUpsampleWeightGrad) std::memset(grad, 0, sizeof(float) * u.weight_size());
    float *x_row = scratch + u.strip_size();
    for (int64_t r = begin; r < end; ++r) {
        const int64_t image = r / u.h, iy = r % u.h;
        upsample_strip(u, t.dy, image, iy, scratch);
        if (op == kUpsampleInputGrad) {
            upsample_input_grad_row(u, t, scratch, image, iy);
            continue;
        }
        std::memset(x_row, 0, sizeof(float) * u.cp * u.w);
        for (int64_t ci = 0; ci < u.c; ++ci)
            std::memcpy(x_row + ci * u.w, t.x + ((image * u.c + ci) * u.h + iy) * u.w, sizeof(float) * u.w);
        upsample_weight_grad_row(u, scratch, x_row, grad);
    }
}

int64_t scratch_floats(int op, const Upsampling &u) {
    return op == kUpsampleForward ? u.op * u.tiles() * u.s : u.strip_size() + u.cp * u.w;
}

// Checks an upsample op's params and sets u: x (n, c, h, w), weight (c, o, 2s, 2s) with s a multiple of 8,
// y (n, o, s h, s w), all float32, at the indices each op has them (see the entry points).
bool upsample_shapes(int op, int nparam, int *ndims, int64_t **shapes, const char **dtypes, Upsampling *u) {
    static const int kIndex[3][3] = {{0, 1, 2}, {2, 1, 0}, {0, 2, 1}};   // x, weight, y per UpsampleOp
    if (nparam != 3) return fail("upsample: expected 2 inputs and 1 output");
    for (int i = 0; i < 3; ++i)
        if (ndims[i] != 4 || std::strcmp(dtypes[i], "float32") != 0)
            return fail("upsample: expected float32 4-D tensors");
    const int64_t *x = shapes[kIndex[op][0]], *weight = shapes[kIndex[op][1]], *y = shapes[kIndex[op][2]];
    const int64_t k = weight[2];
    if (weight[3] != k || k % (2 * kLanes) != 0 || weight[0] != x[1])
        return fail("upsample: the weight must be (c, o, 2 s, 2 s) with s a multiple of " + std::to_string(kLanes) +
                    " and c the input's channels");
    const int64_t s = k / 2;
    if (y[0] != x[0] || y[1] != weight[1] || y[2] != x[2] * s || y[3] != x[3] * s)
        return fail("upsample: the output must be (n, o, s h, s w) for an input (n, c, h, w)");
    *u = {x[0], x[1], weight[1], x[2], x[3], s, round_up(x[1], kBlockC), round_up(weight[1], kBlockO)};
    return true;
}

// Per-thread scratch of the upsample ops; grows, never shrinks.
std::vector<Buffer> thread_scratch;

int upsample(int op, int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
    Upsampling u;
    if (!upsample_shapes(op, nparam, ndims, shapes, dtypes, &u)) return 1;
    std::lock_guard<std::mutex> lock(mutex);
    const int64_t kk = u.k() * u.k();
    UpsampleTensors t{};
    if (op != kUpsampleWeightGrad) {
        const float *weight = static_cast<const float *>(params[1]);
        auto *wp = static_cast<float *>(buffers[kSlotWeights].reserve(sizeof(float) * u.weight_size()));
        if (!wp) return fail("upsample: out of memory for a scratch buffer"), 1;
        std::memset(wp, 0, sizeof(float) * u.weight_size());
        for (int64_t i = 0; i < u.c; ++i)
            for (int64_t j = 0; j < u.o; ++j)
                std::memcpy(wp + (i * u.op + j) * kk, weight + (i * u.o + j) * kk, sizeof(float) * kk);
        t.wp = wp;
    }
    int64_t rows = u.n * u.h;
    if (op == kUpsampleForward) {
        rows = u.n * u.h * u.s;
        const int64_t xw = u.padded_x_columns(), size = u.n * u.c * (u.h + 2) * xw;
        auto *xp = static_cast<float *>(buffers[kSlotSrc].reserve(sizeof(float) * size));
        if (!xp) return fail("upsample: out of memory for a scratch buffer"), 1;
        std::memset(xp, 0, sizeof(float) * size);
        const float *x = static_cast<const float *>(params[0]);
        for (int64_t plane = 0; plane < u.n * u.c; ++plane)
            for (int64_t iy = 0; iy < u.h; ++iy)
                std::memcpy(xp + (plane * (u.h + 2) + iy + 1) * xw + 1, x + (plane * u.h + iy) * u.w,
                            sizeof(float) * u.w);
        t.x = xp;
    } else {
        t.x = static_cast<const float *>(params[0]);
        t.dy = static_cast<const float *>(params[op == kUpsampleInputGrad ? 0 : 1]);
    }
    t.out = static_cast<float *>(params[2]);
    const int threads = pool.threads;
    float *grads = nullptr;
    if (op == kUpsampleWeightGrad &&
        !(grads = static_cast<float *>(buffers[kSlotDst].reserve(sizeof(float) * threads * u.weight_size()))))
        return fail("upsample: out of memory for a scratch buffer"), 1;
    thread_scratch.resize(threads);
    std::vector<char> out_of_memory(threads, 0);
    pool.parallel_for(threads, [&](int i, int n) {
        auto *scratch = static_cast<float *>(thread_scratch[i].reserve(sizeof(float) * scratch_floats(op, u)));
        if (!scratch) {
            out_of_memory[i] = 1;
            return;
        }
        float *grad = grads ? grads + i * u.weight_size() : nullptr;
        vectorised([&] { upsample_share(op, u, t, scratch, grad, rows * i / n, rows * (i + 1) / n); });
    });
    if (std::count(out_of_memory.begin(), out_of_memory.end(), 1))
        return fail("upsample: out of memory for a scratch buffer"), 1;
    if (grads)   // the threads' sums, added in thread order
        parallel_split(u.c * u.o, [&](int64_t pair) {
            const int64_t i = pair / u.o, j = pair % u.o;
            float *dw = t.out + pair * kk;
            for (int64_t e = 0; e < kk; ++e) {
                float sum = 0.0f;
                for (int th = 0; th < threads; ++th) sum += grads[th * u.weight_size() + (i * u.op + j) * kk + e];
                dw[e] = sum;
            }
        });
    return 0;
}

// ---- BatchNorm on the batch's statistics and ReLU, fused for training (batch_norm_relu_*) ----
// y = relu(gamma (x - mean) / sqrt(var + eps) + beta) per channel of NCHW x, mean and var (biased) over the
// images and pixels, and its gradient. MindSpore runs them as BatchNorm, ReLU, ReluGrad and BatchNormGrad, four
// ops with a pass or two over the activation each; here the forward reads x twice (the statistics, then y),
// the gradient reads dy, y and x twice (two sums per channel, then dx). Channels are split over the pool's
// threads. Sums run in float lanes over chunks of kSumChunk pixels, each chunk added in double in a fixed order,
// so they do not depend on the thread count; the forward sums x minus the channel's first value (a shift that
// keeps the variance's E[d^2] - E[d]^2 from cancelling when the mean is large against the spread).
constexpr int64_t kSumChunk = 2048;

inline double lanes_sum(v8 v) {
    double sum = 0.0;
    for (int64_t l = 0; l < kLanes; ++l) sum += v[l];
    return sum;
}

template <typename V>
inline V load_as(const float *p);
template <>
inline v8 load_as<v8>(const float *p) { return load8(p); }
template <>
inline float load_as<float>(const float *p) { return *p; }

struct ChannelTensors {
    int64_t n, c, pixels;   // (n, c, h, w) with h w = pixels
    int64_t offset(int64_t image, int64_t channel) const { return (image * c + channel) * pixels; }
    template <typename T>
    T *plane(T *t, int64_t image, int64_t channel) const { return t + offset(image, channel); }
};

// Two sums over a channel's pixels in all the images: terms(V{}, image, i) gives the pair of terms at pixel i
// of that image's plane, as V = v8 (kLanes pixels from i) or V = float (pixel i alone, for a chunk's tail).
template <typename Terms>
std::pair<double, double> channel_sums(const ChannelTensors &t, const Terms &terms) {
    double first = 0.0, second = 0.0;
    for (int64_t image = 0; image < t.n; ++image)
        for (int64_t start = 0; start < t.pixels; start += kSumChunk) {
            const int64_t last = std::min(t.pixels, start + kSumChunk);
            v8 lanes_first = {}, lanes_second = {};
            float rest_first = 0.0f, rest_second = 0.0f;
            int64_t i = start;
            for (; i + kLanes <= last; i += kLanes) {
                const auto [a, b] = terms(v8{}, image, i);
                lanes_first += a;
                lanes_second += b;
            }
            for (; i < last; ++i) {
                const auto [a, b] = terms(0.0f, image, i);
                rest_first += a;
                rest_second += b;
            }
            first += lanes_sum(lanes_first) + rest_first;
            second += lanes_sum(lanes_second) + rest_second;
        }
    return {first, second};
}

// Checks nparam tensors: those at `full` shaped as the first, (c,) at `per_channel`, (rows, c) at `table` for
// each (index, rows) pair, (1,) at `scalars`, all float32; sets the channel layout.
bool channel_shapes(int nparam, int expected, int *ndims, int64_t **shapes, const char **dtypes,
                    std::initializer_list<int> full, std::initializer_list<int> per_channel,
                    std::initializer_list<std::pair<int, int64_t>> tables, std::initializer_list<int> scalars,
                    ChannelTensors *t) {
    if (nparam != expected) return fail("batch norm: expected " + std::to_string(expected) + " tensors");
    for (int i = 0; i < nparam; ++i)
        if (std::strcmp(dtypes[i], "float32") != 0) return fail("batch norm: float32 only");
    const int64_t *x = shapes[0];
    if (ndims[0] != 4) return fail("batch norm: expected a 4-D (n, c, h, w) activation");
    for (int i : full)
        if (ndims[i] != 4 || !std::equal(shapes[i], shapes[i] + 4, x))
            return fail("batch norm: the activations and their gradients must have one shape");
    for (int i : per_channel)
        if (ndims[i] != 1 || shapes[i][0] != x[1])
            return fail("batch norm: gamma, beta and the moving statistics must be (c,)");
    for (auto [i, rows] : tables)
        if (ndims[i] != 2 || shapes[i][0] != rows || shapes[i][1] != x[1])
            return fail("batch norm: the statistics must be (" + std::to_string(rows) + ", c)");
    for (int i : scalars)
        if (ndims[i] != 1 || shapes[i][0] != 1) return fail("batch norm: eps and momentum must be (1,)");
    *t = {x[0], x[1], x[2] * x[3]};
    return true;
}
}  // namespace

extern "C" {

// Loads oneDNN from dnnl_path (dlopen, private to this library), makes the engine and a stream whose
// parallel regions run on `threads` threads (SleepingPool). Returns 0, or 1 with fcn8s_onednn_error() saying
// why. Calling it again is a no-op.
int fcn8s_onednn_init(const char *dnnl_path, int threads) {
    std::lock_guard<std::mutex> lock(mutex);
    if (stream) return 0;
    void *lib = dlopen(dnnl_path, RTLD_NOW | RTLD_LOCAL);
    if (!lib) return fail(std::string("cannot load ") + dnnl_path + ": " + dlerror()), 1;
    bool ok = load(lib, "dnnl_engine_create", &api.engine_create) &&
              load(lib, "dnnl_threadpool_interop_stream_create", &api.threadpool_interop_stream_create) &&
              load(lib, "dnnl_stream_wait", &api.stream_wait) &&
              load(lib, "dnnl_memory_desc_create_with_tag", &api.memory_desc_create_with_tag) &&
              load(lib, "dnnl_memory_desc_equal", &api.memory_desc_equal) &&
              load(lib, "dnnl_memory_desc_get_size", &api.memory_desc_get_size) &&
              load(lib, "dnnl_memory_create", &api.memory_create) &&
              load(lib, "dnnl_memory_destroy", &api.memory_destroy) &&
              load(lib, "dnnl_primitive_attr_create", &api.primitive_attr_create) &&
              load(lib, "dnnl_primitive_attr_set_scratchpad_mode", &api.primitive_attr_set_scratchpad_mode) &&
              load(lib, "dnnl_post_ops_create", &api.post_ops_create) &&
              load(lib, "dnnl_post_ops_append_eltwise", &api.post_ops_append_eltwise) &&
              load(lib, "dnnl_post_ops_append_binary", &api.post_ops_append_binary) &&
              load(lib, "dnnl_primitive_attr_set_post_ops", &api.primitive_attr_set_post_ops) &&
              load(lib, "dnnl_convolution_forward_primitive_desc_create",
                   &api.convolution_forward_primitive_desc_create) &&
              load(lib, "dnnl_convolution_backward_data_primitive_desc_create",
                   &api.convolution_backward_data_primitive_desc_create) &&
              load(lib, "dnnl_convolution_backward_weights_primitive_desc_create",
                   &api.convolution_backward_weights_primitive_desc_create) &&
              load(lib, "dnnl_reorder_primitive_desc_create", &api.reorder_primitive_desc_create) &&
              load(lib, "dnnl_primitive_desc_query_md", &api.primitive_desc_query_md) &&
              load(lib, "dnnl_primitive_desc_query", &api.primitive_desc_query) &&
              load(lib, "dnnl_primitive_create", &api.primitive_create) &&
              load(lib, "dnnl_primitive_execute", &api.primitive_execute) &&
              load(lib, "dnnl_threadpool_interop_sgemm", &api.threadpool_interop_sgemm);
    if (!ok) return 1;
    if (threads < 1) return fail("threads must be at least 1, got " + std::to_string(threads)), 1;
    pool.threads = threads;
    handle_t new_engine;
    if (api.engine_create(&new_engine, kEngineCpu, 0) != kSuccess) return fail("cannot create a CPU engine"), 1;
    if (!user_scratchpad_attr(&scratchpad_attr)) return fail("cannot create primitive attributes"), 1;
    handle_t new_stream;
    if (api.threadpool_interop_stream_create(&new_stream, new_engine, &pool) != kSuccess)
        return fail("cannot create a threadpool stream (is this oneDNN built for the threadpool runtime?)"), 1;
    engine = new_engine;
    stream = new_stream;
    return 0;
}

const char *fcn8s_onednn_error() { return last_error.c_str(); }

// How long the pool's threads spin waiting for the next region (workers) or for the workers' shares (the
// caller) before they sleep, in microseconds (kSpinMicroseconds by default); returns the spin it replaces. For
// A/B benchmarks and tests.
double fcn8s_set_pool_spin(double microseconds) { return pool.spin.exchange(microseconds * 1e-6) * 1e6; }

// Whether the library's own loops (see vectorised) run their baseline build only (on != 0), or the AVX2 + FMA
// one where the CPU has both (on = 0, the default); tests run both.
void fcn8s_baseline_build(int on) {
    std::lock_guard<std::mutex> lock(mutex);
    baseline_build_only = on != 0;
}

// Which build of the library's own loops runs (see vectorised): 1 the AVX2 + FMA one, 0 the baseline.
int fcn8s_vector_build() {
    std::lock_guard<std::mutex> lock(mutex);
    return runs_avx2_fma_build() ? 1 : 0;
}

// Whether this CPU can run the AVX2 + FMA build of those loops (1) or only the baseline one (0), whatever
// fcn8s_baseline_build says: the one home of that rule, which the kernel plan asks too.
int fcn8s_cpu_has_avx2_fma() { return cpu_has_avx2_fma() ? 1 : 0; }

// Writes the oneDNN implementation chosen for op (0 forward, 1 input grad, 2 weight grad, 3 forward + BN +
// ReLU) with the activations in layout (0 channels-last, 1 oneDNN's choice) at this shape into out (e.g.
// "brg_conv_fwd:avx512_core"). Returns 0, or 1 if no plan could be made.
int fcn8s_onednn_impl(int op, int layout, int64_t n, int64_t c, int64_t o, int64_t h, int64_t w, int64_t k, char *out,
                      int size) {
    std::lock_guard<std::mutex> lock(mutex);
    if (!stream) return 1;
    Plan *plan = find_plan(op, layout, n, c, o, h, w, k);
    if (!plan) return 1;
    std::snprintf(out, size, "%s", plan->impl.c_str());
    return 0;
}

// The convolutions, with the activations channels-last inside (conv2d_*) or in oneDNN's choice of layout
// (conv2d_*_any_layout). The params: forward x (n, c, h, w), weight (o, c, k, k), y (n, o, h, w);
// input gradient dout (n, o, h, w), weight, dx (n, c, h, w); weight gradient x, dout, dweight (o, c, k, k).
#define FCN8S_CONV_ENTRY(name, op, layout)                                                                   \
    int name(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *, void *) { \
        return run(op, layout, nparam, params, ndims, shapes, dtypes);                                       \
    }
FCN8S_CONV_ENTRY(conv2d_forward, kForward, kChannelsLast)
FCN8S_CONV_ENTRY(conv2d_input_grad, kBackwardData, kChannelsLast)
FCN8S_CONV_ENTRY(conv2d_weight_grad, kBackwardWeights, kChannelsLast)
FCN8S_CONV_ENTRY(conv2d_forward_any_layout, kForward, kOneDNNChoice)
FCN8S_CONV_ENTRY(conv2d_input_grad_any_layout, kBackwardData, kOneDNNChoice)
FCN8S_CONV_ENTRY(conv2d_weight_grad_any_layout, kBackwardWeights, kOneDNNChoice)
// inference: relu(conv(x, weight) * scale + shift), params x, weight, scale (o), shift (o), y
FCN8S_CONV_ENTRY(conv2d_forward_bn_relu, kForwardBNReLU, kChannelsLast)
FCN8S_CONV_ENTRY(conv2d_forward_bn_relu_any_layout, kForwardBNReLU, kOneDNNChoice)

// params x (n, c, h, w), y (n, c, h/2, w/2) float32, winner (n, c, h/2, w/2) uint8
int max_pool2x2_forward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *,
                        void *) {
    if (!pool_shapes_agree(nparam, 3, ndims, shapes, dtypes, 0, 1, 2)) return 1;
    const int64_t *s = shapes[0];
    const int64_t h = s[2], w = s[3], ho = h / 2, wo = w / 2;
    const float *x = static_cast<const float *>(params[0]);
    float *y = static_cast<float *>(params[1]);
    uint8_t *winner = static_cast<uint8_t *>(params[2]);
    for_planes(s[0] * s[1], [&](int64_t p) {
        const float *in = x + p * h * w;
        float *out = y + p * ho * wo;
        uint8_t *won = winner + p * ho * wo;
        for (int64_t oy = 0; oy < ho; ++oy) {
            const float *top = in + 2 * oy * w, *bottom = top + w;
            for (int64_t ox = 0; ox < wo; ++ox) {
                const float v[4] = {top[2 * ox], top[2 * ox + 1], bottom[2 * ox], bottom[2 * ox + 1]};
                uint8_t best = 0;
                for (uint8_t i = 1; i < 4; ++i)
                    if (v[i] > v[best]) best = i;
                out[oy * wo + ox] = v[best];
                won[oy * wo + ox] = best;
            }
        }
    });
    return 0;
}

// params dout (n, c, h/2, w/2) float32, winner (n, c, h/2, w/2) uint8, x (n, c, h, w) (its shape only),
// dx (n, c, h, w) float32
int max_pool2x2_grad(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *,
                     void *) {
    if (!pool_shapes_agree(nparam, 4, ndims, shapes, dtypes, 3, 0, 1)) return 1;
    const int64_t *s = shapes[3];
    const int64_t h = s[2], w = s[3], ho = h / 2, wo = w / 2;
    const float *dout = static_cast<const float *>(params[0]);
    const uint8_t *winner = static_cast<const uint8_t *>(params[1]);
    float *dx = static_cast<float *>(params[3]);
    for_planes(s[0] * s[1], [&](int64_t p) {
        float *grad = dx + p * h * w;
        const float *g = dout + p * ho * wo;
        const uint8_t *won = winner + p * ho * wo;
        if (h % 2) std::memset(grad + (h - 1) * w, 0, sizeof(float) * w);   // the dropped last row
        for (int64_t oy = 0; oy < ho; ++oy) {
            float *top = grad + 2 * oy * w, *bottom = top + w;
            for (int64_t ox = 0; ox < wo; ++ox) {
                float v = g[oy * wo + ox];
                uint8_t best = won[oy * wo + ox];
                top[2 * ox] = best == 0 ? v : 0.0f;
                top[2 * ox + 1] = best == 1 ? v : 0.0f;
                bottom[2 * ox] = best == 2 ? v : 0.0f;
                bottom[2 * ox + 1] = best == 3 ? v : 0.0f;
            }
            if (w % 2) top[w - 1] = bottom[w - 1] = 0.0f;   // the dropped last column
        }
    });
    return 0;
}

// Convolutions as matrix products (conv6 and conv7: many channels on a small map), on oneDNN's sgemm at
// the best ISA: W is the weight (o, c, k, k) read as an (o, K) matrix, K = c k k; cols are the
// input's k x k patches (n, K, P) (ops.unfold; the input itself for k = 1), P = h w. Each op is one sgemm
// over all the images side by side (SideBySide).

// y (n, o, P) = W cols[i] for each image i: params W, cols, y
int gemm_forward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *, void *) {
    int64_t o, kk, n, p;
    if (!gemm_shapes(nparam, ndims, shapes, dtypes, 0, 1, 2, &o, &kk, &n, &p)) return 1;
    std::lock_guard<std::mutex> lock(mutex);
    if (!stream) return fail(last_error), 1;
    const float *w = static_cast<const float *>(params[0]);
    SideBySide cols(static_cast<const float *>(params[1]), n, kk, p, kSlotSrc, true),
        y(static_cast<float *>(params[2]), n, o, p, kSlotDst, false);
    if (!cols.data || !y.data) return fail("gemm: out of memory for a scratch buffer"), 1;
    return sgemm_locked([&] {
        return api.threadpool_interop_sgemm('N', 'N', o, n * p, kk, 1.0f, w, kk, cols.data, n * p, 0.0f, y.data, n * p,
                                            &pool);
    }, &y);
}

// dcols (n, K, P) = W^T dy[i] for each image i: params W, dy (n, o, P), dcols. Computed as its transpose
// dy^T W, (n P, K), then transposed into place: oneDNN's sgemm runs W^T dy (the large W transposed) at about
// half the speed of dy^T W (the small dy transposed), which with the transpose is 1.2x (conv6) to 2x (conv7)
// faster at full width, and as fast at the demo's quarter width.
int gemm_input_grad(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *, void *) {
    int64_t o, kk, n, p;
    if (!gemm_shapes(nparam, ndims, shapes, dtypes, 0, 2, 1, &o, &kk, &n, &p)) return 1;
    std::lock_guard<std::mutex> lock(mutex);
    if (!stream) return fail(last_error), 1;
    const float *w = static_cast<const float *>(params[0]);
    SideBySide dy(static_cast<const float *>(params[1]), n, o, p, kSlotSrc, true);
    auto *product = static_cast<float *>(buffers[kSlotDst].reserve(sizeof(float) * n * p * kk));
    if (!dy.data || !product) return fail("gemm: out of memory for a scratch buffer"), 1;
    if (sgemm_locked([&] {
            return api.threadpool_interop_sgemm('T', 'N', n * p, kk, o, 1.0f, dy.data, n * p, w, kk, 0.0f, product, kk,
                                                &pool);
        }, nullptr) != 0)
        return 1;
    auto *dcols = static_cast<float *>(params[2]);
    for (int64_t i = 0; i < n; ++i) transpose(product + i * p * kk, dcols + i * kk * p, p, kk);
    return 0;
}

// dW (o, K) = sum over images of dy[i] cols[i]^T: params dy (n, o, P), cols (n, K, P), dW (shaped as W)
int gemm_weight_grad(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *, void *) {
    int64_t o, kk, n, p;
    if (!gemm_shapes(nparam, ndims, shapes, dtypes, 2, 1, 0, &o, &kk, &n, &p)) return 1;
    std::lock_guard<std::mutex> lock(mutex);
    if (!stream) return fail(last_error), 1;
    float *dw = static_cast<float *>(params[2]);
    SideBySide dy(static_cast<const float *>(params[0]), n, o, p, kSlotDst, true),
        cols(static_cast<const float *>(params[1]), n, kk, p, kSlotSrc, true);
    if (!dy.data || !cols.data) return fail("gemm: out of memory for a scratch buffer"), 1;
    return sgemm_locked([&] {
        return api.threadpool_interop_sgemm('N', 'T', o, kk, n * p, 1.0f, dy.data, n * p, cols.data, n * p, 0.0f, dw,
                                            kk, &pool);
    }, nullptr);
}

// The training loss (fcn8s/loss.py): params logits (n, C, h, w) float32, labels (n, h, w) int32, the ignore
// label (1,) int32 (void pixels), then the outputs sums (2,) float32, the loss summed over the labelled
// pixels and their count, and lse (n, h, w) float32, each pixel's log-sum-exp of its logits (the gradient
// reuses it). Each tile's sums are added in tile order, so the result does not depend on the thread count.
// A label outside 0..C-1 other than the ignore label is an error.
int cross_entropy_forward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *,
                          void *) {
    PixelTiles tiles;
    int64_t count;
    if (!loss_shapes(nparam, 5, ndims, shapes, dtypes, 4, &tiles, &count)) return 1;
    const float *logits = static_cast<const float *>(params[0]);
    const int32_t *labels = static_cast<const int32_t *>(params[1]);
    const int32_t ignore = *static_cast<const int32_t *>(params[2]);
    float *lse = static_cast<float *>(params[4]);
    const int64_t classes = tiles.classes, pixels = tiles.pixels;
    std::vector<double> tile_loss(count);
    std::vector<int64_t> tile_labelled(count);
    std::vector<int32_t> bad_label(count, ignore);
    for_planes_vectorised(count, [&](int64_t tile) {
        int64_t logit0, pixel0, len;
        tiles.at(tile, &logit0, &pixel0, &len);
        const float *x = logits + logit0;
        float most[kPixelTile], sum[kPixelTile];
        for (int64_t j = 0; j < len; ++j) most[j] = x[j], sum[j] = 0.0f;
        for (int64_t c = 1; c < classes; ++c)
            for (int64_t j = 0; j < len; ++j) most[j] = x[c * pixels + j] > most[j] ? x[c * pixels + j] : most[j];
        for (int64_t c = 0; c < classes; ++c)
            for (int64_t j = 0; j < len; ++j) sum[j] += exp_approx(x[c * pixels + j] - most[j]);
        double loss = 0.0;
        int64_t labelled = 0;
        for (int64_t j = 0; j < len; ++j) {
            const float pixel_lse = most[j] + std::log(sum[j]);
            lse[pixel0 + j] = pixel_lse;
            const int32_t label = labels[pixel0 + j];
            if (label == ignore) continue;
            if (label < 0 || label >= classes) {
                bad_label[tile] = label;
                continue;
            }
            loss += pixel_lse - x[label * pixels + j];
            ++labelled;
        }
        tile_loss[tile] = loss;
        tile_labelled[tile] = labelled;
    });
    double loss = 0.0;
    int64_t labelled = 0;
    for (int64_t tile = 0; tile < count; ++tile) {
        if (bad_label[tile] != ignore)
            return fail("cross entropy: label " + std::to_string(bad_label[tile]) + " is outside 0.." +
                        std::to_string(classes - 1) + " and not the ignore label " + std::to_string(ignore)), 1;
        loss += tile_loss[tile];
        labelled += tile_labelled[tile];
    }
    float *sums = static_cast<float *>(params[3]);
    sums[0] = static_cast<float>(loss);
    sums[1] = static_cast<float>(labelled);
    return 0;
}

// The gradient of the summed loss times scale: (softmax(logits) - the label's one-hot) * scale on labelled
// pixels, 0 on void ones. params logits, labels, ignore, lse (cross_entropy_forward's), scale (1,) float32,
// dlogits (n, C, h, w) float32.
int cross_entropy_grad(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *,
                       void *) {
    PixelTiles tiles;
    int64_t count;
    if (!loss_shapes(nparam, 6, ndims, shapes, dtypes, 3, &tiles, &count)) return 1;
    if (ndims[4] != 1 || shapes[4][0] != 1 || std::strcmp(dtypes[4], "float32") != 0 || ndims[5] != 4 ||
        std::strcmp(dtypes[5], "float32") != 0 || !std::equal(shapes[5], shapes[5] + 4, shapes[0]))
        return fail("cross entropy: expected a float32 scale (1,) and float32 dlogits shaped as the logits");
    const float *logits = static_cast<const float *>(params[0]);
    const int32_t *labels = static_cast<const int32_t *>(params[1]);
    const int32_t ignore = *static_cast<const int32_t *>(params[2]);
    const float *lse = static_cast<const float *>(params[3]);
    const float scale = *static_cast<const float *>(params[4]);
    float *dlogits = static_cast<float *>(params[5]);
    const int64_t classes = tiles.classes, pixels = tiles.pixels;
    for_planes_vectorised(count, [&](int64_t tile) {
        int64_t logit0, pixel0, len;
        tiles.at(tile, &logit0, &pixel0, &len);
        const float *x = logits + logit0, *pixel_lse = lse + pixel0;
        const int32_t *label = labels + pixel0;
        float *dx = dlogits + logit0;
        float weight[kPixelTile];
        for (int64_t j = 0; j < len; ++j) weight[j] = label[j] == ignore ? 0.0f : scale;
        for (int32_t c = 0; c < classes; ++c)   // int32 like the labels, so the comparison vectorizes
            for (int64_t j = 0; j < len; ++j)
                dx[c * pixels + j] = (exp_approx(x[c * pixels + j] - pixel_lse[j]) - (label[j] == c ? 1.0f : 0.0f)) *
                                     weight[j];
    });
    return 0;
}

// Upsampling (see upsample above), as nn.Conv2dTranspose(c, o, 2 s, stride s, pad_mode 'same') with s a multiple
// of 8. params: forward x (n, c, h, w), weight (c, o, 2 s, 2 s), y (n, o, s h, s w); input gradient dy, weight,
// dx; weight gradient x, dy, dweight.
#define FCN8S_UPSAMPLE_ENTRY(name, op)                                                                     \
    int name(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *, void *) { \
        return upsample(op, nparam, params, ndims, shapes, dtypes);                                         \
    }
FCN8S_UPSAMPLE_ENTRY(upsample_forward, kUpsampleForward)
FCN8S_UPSAMPLE_ENTRY(upsample_input_grad, kUpsampleInputGrad)
FCN8S_UPSAMPLE_ENTRY(upsample_weight_grad, kUpsampleWeightGrad)

// Training's BatchNorm and ReLU (see batch norm above). params x (n, c, h, w), gamma (c), beta (c), eps (1,),
// moving_mean (c), moving_variance (c), momentum (1,), then the outputs y (n, c, h, w) and stats (2, c): the
// batch's mean and 1 / sqrt(its biased variance + eps), which the gradient reuses. Like MindSpore's BatchNorm,
// it updates the moving statistics in place (the op declares them written): moving = moving (1 - momentum) +
// the batch's momentum, with the unbiased variance.
int batch_norm_relu_forward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *,
                            void *) {
    ChannelTensors t;
    if (!channel_shapes(nparam, 9, ndims, shapes, dtypes, {7}, {1, 2, 4, 5}, {{8, 2}}, {3, 6}, &t)) return 1;
    const float *x = static_cast<const float *>(params[0]), *gamma = static_cast<const float *>(params[1]),
                *beta = static_cast<const float *>(params[2]);
    const float eps = *static_cast<const float *>(params[3]), momentum = *static_cast<const float *>(params[6]);
    float *moving_mean = static_cast<float *>(params[4]), *moving_variance = static_cast<float *>(params[5]);
    float *y = static_cast<float *>(params[7]), *stats = static_cast<float *>(params[8]);
    const double count = static_cast<double>(t.n * t.pixels);
    for_planes_vectorised(t.c, [&](int64_t channel) {
        const float first = *t.plane(x, 0, channel);
        const auto [sum, squares] = channel_sums(t, [&](auto lanes, int64_t image, int64_t i) {   // of d = x - first
            using V = decltype(lanes);
            const V d = load_as<V>(x + t.offset(image, channel) + i) - first;
            return std::pair<V, V>{d, d * d};
        });
        const double shifted_mean = sum / count, mean = first + shifted_mean;
        const double var = std::max(0.0, squares / count - shifted_mean * shifted_mean);
        const double invstd = 1.0 / std::sqrt(var + eps);
        const float scale = static_cast<float>(gamma[channel] * invstd);
        const float shift = static_cast<float>(beta[channel] - mean * scale);
        for (int64_t image = 0; image < t.n; ++image) {
            const float *p = t.plane(x, image, channel);
            float *out = t.plane(y, image, channel);
            for (int64_t i = 0; i < t.pixels; ++i) out[i] = std::max(p[i] * scale + shift, 0.0f);
        }
        stats[channel] = static_cast<float>(mean);
        stats[t.c + channel] = static_cast<float>(invstd);
        const double unbiased = count > 1 ? var * count / (count - 1) : var;
        moving_mean[channel] = static_cast<float>(moving_mean[channel] * (1.0 - momentum) + mean * momentum);
        moving_variance[channel] =
            static_cast<float>(moving_variance[channel] * (1.0 - momentum) + unbiased * momentum);
    });
    return 0;
}

// Its gradient: params dy, y, x (n, c, h, w), gamma (c), stats (2, c) (the forward's), then the outputs dx
// (n, c, h, w) and dparams (2, c): the gradients of gamma and beta. With g = dy where y > 0, else 0 (the ReLU's),
// dbeta = sum g, dgamma = sum g (x - mean) invstd, dx = gamma invstd (g - dbeta / m - (x - mean) invstd^2
// sum g (x - mean) / m), m the pixels of a channel in the batch.
int batch_norm_relu_grad(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *,
                         void *) {
    ChannelTensors t;
    if (!channel_shapes(nparam, 7, ndims, shapes, dtypes, {1, 2, 5}, {3}, {{4, 2}, {6, 2}}, {}, &t)) return 1;
    const float *dy = static_cast<const float *>(params[0]), *y = static_cast<const float *>(params[1]),
                *x = static_cast<const float *>(params[2]), *gamma = static_cast<const float *>(params[3]),
                *stats = static_cast<const float *>(params[4]);
    float *dx = static_cast<float *>(params[5]), *dparams = static_cast<float *>(params[6]);
    const double count = static_cast<double>(t.n * t.pixels);
    for_planes_vectorised(t.c, [&](int64_t channel) {
        const float mean = stats[channel], invstd = stats[t.c + channel];
        const auto [sum, centred] = channel_sums(t, [&](auto lanes, int64_t image, int64_t i) {   // of g, g (x - mean)
            using V = decltype(lanes);
            const int64_t at = t.offset(image, channel) + i;
            const V g = load_as<V>(y + at) > 0.0f ? load_as<V>(dy + at) : V{};
            return std::pair<V, V>{g, g * (load_as<V>(x + at) - mean)};
        });
        const float a = gamma[channel] * invstd;
        const float b = static_cast<float>(-a * invstd * invstd * centred / count);
        const float c = static_cast<float>(-a * sum / count);
        for (int64_t image = 0; image < t.n; ++image) {
            const float *pdy = t.plane(dy, image, channel), *py = t.plane(y, image, channel),
                        *px = t.plane(x, image, channel);
            float *out = t.plane(dx, image, channel);
            for (int64_t i = 0; i < t.pixels; ++i) out[i] = (py[i] > 0.0f ? pdy[i] : 0.0f) * a + (px[i] - mean) * b + c;
        }
        dparams[channel] = static_cast<float>(centred * invstd);
        dparams[t.c + channel] = static_cast<float>(sum);
    });
    return 0;
}

// Momentum SGD's update of one parameter, in place (the op declares weight and moment written), as nn.Momentum
// with weight decay computes it, in one pass: moment = momentum moment + (grad + decay weight), then
// weight -= lr moment. params weight, moment, grad (the same number of floats), lr, momentum, decay (one float
// each), then the output done (1,): 1. The native way (fcn8s/optim.py) is two passes: the decay into the moment
// (two streams in, one out), then ApplyMomentum (three in, two out); this one reads three and writes two.
int sgd_momentum_update(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *,
                        void *) {
    if (nparam != 7) return fail("momentum update: expected 6 inputs and 1 output"), 1;
    int64_t size[7];
    for (int i = 0; i < 7; ++i) {
        if (std::strcmp(dtypes[i], "float32") != 0)
            return fail(std::string("momentum update: float32 only, got ") + dtypes[i]), 1;
        size[i] = 1;
        for (int d = 0; d < ndims[i]; ++d) size[i] *= shapes[i][d];
    }
    if (size[1] != size[0] || size[2] != size[0] || size[3] != 1 || size[4] != 1 || size[5] != 1 || size[6] != 1)
        return fail("momentum update: expected a weight, moment and gradient of one size and three scalars"), 1;
    float *weight = static_cast<float *>(params[0]), *moment = static_cast<float *>(params[1]);
    const float *grad = static_cast<const float *>(params[2]);
    const float lr = *static_cast<const float *>(params[3]), momentum = *static_cast<const float *>(params[4]),
                decay = *static_cast<const float *>(params[5]);
    constexpr int64_t kChunk = 16384;   // floats: a chunk per task, and a parameter under one chunk is not split
    const int64_t count = size[0];
    for_planes_vectorised((count + kChunk - 1) / kChunk, [&](int64_t chunk) {
        for (int64_t i = chunk * kChunk, end = std::min(count, (chunk + 1) * kChunk); i < end; ++i) {
            const float m = moment[i] * momentum + (grad[i] + decay * weight[i]);
            moment[i] = m;
            weight[i] -= lr * m;
        }
    });
    *static_cast<float *>(params[6]) = 1.0f;
    return 0;
}

}  // extern "C"
