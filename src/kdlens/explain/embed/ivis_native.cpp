// kdlens: one Ivis training step with the PN loss, forward + loss + backward in one call.
// The same arithmetic as kdlens/explain/embed/ivis_step.py (manual_step with pn_loss_and_grad),
// with the element-wise work of each layer fused into one loop; the matrix products stay ATen's.
// Built on first use by kdlens/explain/embed/ivis_native.py (torch.utils.cpp_extension).
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {
constexpr float kScale = 1.0507009873554804934193349852946f;  // SELU λ (Klambauer et al. 2017)
constexpr float kScaleAlpha = 1.0507009873554804934193349852946f * 1.6732632423543772848170429916717f;  // λα

// eˣ for x ≤ 0: x = k·ln2 + r with |r| ≤ ln2/2, eʳ by its degree-6 Taylor polynomial (relative
// error < 3e-7 there), 2ᵏ built in the exponent bits; x is clamped at −87 (e⁻⁸⁷ ≈ 1.6e-38).
// Branch-free, so the compiler vectorises the loops that call it.
inline float exp_nonpositive(float x) {
  x = std::max(std::min(x, 0.f), -87.f);
  float k = std::nearbyint(x * 1.44269504088896341f);
  float r = x - k * 0.693145751953125f - k * 1.42860682030941723212e-6f;  // ln2 split in two
  float p = 1.f + r * (1.f + r * (0.5f + r * (1.f / 6 + r * (1.f / 24 + r * (1.f / 120 + r * (1.f / 720))))));
  int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  float two_k;
  std::memcpy(&two_k, &bits, sizeof two_k);
  return p * two_k;
}

inline float selu(float v) { return v > 0.f ? kScale * v : kScaleAlpha * (exp_nonpositive(v) - 1.f); }
// SELU'(z) from its output s = SELU(z): λ where s > 0, s + λα elsewhere (s = λα(eᶻ − 1) there)
inline float selu_grad_from_output(float s) { return s > 0.f ? kScale : s + kScaleAlpha; }

// z ← s = SELU(z); h ← m ? a·s + b : c0 (AlphaDropout with keep mask m)
void selu_dropout(float* __restrict z, float* __restrict h, const uint8_t* __restrict keep, int64_t n, float a,
                  float b, float c0) {
  for (int64_t i = 0; i < n; ++i) {
    float s = selu(z[i]);
    z[i] = s;
    h[i] = keep[i] ? a * s + b : c0;
  }
}

void selu_in_place(float* __restrict z, int64_t n) {
  for (int64_t i = 0; i < n; ++i) z[i] = selu(z[i]);
}

// g ← g · (a·m) · SELU'(z)
void selu_dropout_backward(float* __restrict g, const float* __restrict s, const uint8_t* __restrict keep, int64_t n,
                           float a) {
  for (int64_t i = 0; i < n; ++i) g[i] *= selu_grad_from_output(s[i]) * (keep[i] ? a : 0.f);
}

void selu_backward(float* __restrict g, const float* __restrict s, int64_t n) {
  for (int64_t i = 0; i < n; ++i) g[i] *= selu_grad_from_output(s[i]);
}

// Mean PN loss of e = [anchors; positives; negatives] and ∂L/∂e into ge (see pn_loss_and_grad).
double pn_loss_and_grad(const float* e, float* ge, int64_t nb, int64_t dim, float margin) {
  double total = 0.0;
  std::vector<float> dap(dim), dan(dim), dpn(dim);
  for (int64_t t = 0; t < nb; ++t) {
    const float *pa = e + t * dim, *pp = e + (nb + t) * dim, *pn = e + (2 * nb + t) * dim;
    float sap = 0.f, san = 0.f, spn = 0.f;
    for (int64_t j = 0; j < dim; ++j) {
      dap[j] = pa[j] - pp[j];
      dan[j] = pa[j] - pn[j];
      dpn[j] = pp[j] - pn[j];
      sap += dap[j] * dap[j];
      san += dan[j] * dan[j];
      spn += dpn[j] * dpn[j];
    }
    float d_ap = std::sqrt(sap + 1e-12f), d_an = std::sqrt(san + 1e-12f), d_pn = std::sqrt(spn + 1e-12f);
    float hinge = d_ap - std::min(d_an, d_pn) + margin;
    float *ga = ge + t * dim, *gp = ge + (nb + t) * dim, *gn = ge + (2 * nb + t) * dim;
    if (!(hinge > 0.f)) {
      std::fill(ga, ga + dim, 0.f);
      std::fill(gp, gp + dim, 0.f);
      std::fill(gn, gn + dim, 0.f);
      continue;
    }
    total += hinge;
    float w_an = d_an < d_pn ? 1.f : (d_an == d_pn ? 0.5f : 0.f);  // the minimum's share; ½ on a tie
    float c_ap = 1.f / (nb * d_ap), c_an = w_an / (nb * d_an), c_pn = (1.f - w_an) / (nb * d_pn);
    for (int64_t j = 0; j < dim; ++j) {
      float u_ap = c_ap * dap[j], u_an = c_an * dan[j], u_pn = c_pn * dpn[j];
      ga[j] = u_ap - u_an;
      gp[j] = -(u_ap + u_pn);
      gn[j] = u_an + u_pn;
    }
  }
  return total / nb;
}
}  // namespace

// x: 3b rows (anchors, positives, negatives), float32, contiguous. Per hidden layer l: weight,
// bias, keep mask (uint8, rows × width; empty: no dropout) and AlphaDropout's a, b, c0.
// grads: tensors the gradients are written into — W0, b0, W1, b1, …, W_emb, b_emb. Returns the loss.
double pn_step(torch::Tensor x, std::vector<torch::Tensor> weights, std::vector<torch::Tensor> biases,
               std::vector<torch::Tensor> keep, std::vector<double> a, std::vector<double> b,
               std::vector<double> c0, torch::Tensor emb_weight, torch::Tensor emb_bias, double margin,
               std::vector<torch::Tensor> grads) {
  torch::NoGradGuard no_grad;
  const size_t layers = weights.size();
  TORCH_CHECK(biases.size() == layers && keep.size() == layers && a.size() == layers && b.size() == layers &&
                  c0.size() == layers && grads.size() == 2 * layers + 2,
              "pn_step: one weight, bias, mask, a, b, c0 per layer and two gradients per layer + embedding");
  TORCH_CHECK(x.scalar_type() == torch::kFloat && x.is_contiguous() && x.size(0) % 3 == 0,
              "pn_step: x must be contiguous float32 with 3·b rows");
  std::vector<torch::Tensor> inputs, outputs;  // h_{l−1}, SELU outputs s_l
  torch::Tensor h = x;
  for (size_t l = 0; l < layers; ++l) {
    inputs.push_back(h);
    torch::Tensor z = torch::addmm(biases[l], h, weights[l].t());
    if (keep[l].numel() > 0) {
      TORCH_CHECK(keep[l].numel() == z.numel() && keep[l].scalar_type() == torch::kUInt8, "pn_step: mask shape");
      torch::Tensor next = torch::empty_like(z);
      selu_dropout(z.data_ptr<float>(), next.data_ptr<float>(), keep[l].data_ptr<uint8_t>(), z.numel(),
                   static_cast<float>(a[l]), static_cast<float>(b[l]), static_cast<float>(c0[l]));
      h = next;
    } else {
      selu_in_place(z.data_ptr<float>(), z.numel());
      h = z;
    }
    outputs.push_back(z);
  }
  torch::Tensor e = torch::addmm(emb_bias, h, emb_weight.t()).contiguous();
  torch::Tensor ge = torch::empty_like(e);
  double loss = pn_loss_and_grad(e.data_ptr<float>(), ge.data_ptr<float>(), e.size(0) / 3, e.size(1),
                                 static_cast<float>(margin));
  torch::mm_out(grads[2 * layers], ge.t(), h);
  torch::sum_out(grads[2 * layers + 1], ge, 0);
  torch::Tensor g = torch::mm(ge, emb_weight);
  for (size_t i = layers; i-- > 0;) {
    if (keep[i].numel() > 0)
      selu_dropout_backward(g.data_ptr<float>(), outputs[i].data_ptr<float>(), keep[i].data_ptr<uint8_t>(),
                            g.numel(), static_cast<float>(a[i]));
    else
      selu_backward(g.data_ptr<float>(), outputs[i].data_ptr<float>(), g.numel());
    torch::mm_out(grads[2 * i], g.t(), inputs[i]);
    torch::sum_out(grads[2 * i + 1], g, 0);
    if (i > 0) g = torch::mm(g, weights[i]);
  }
  return loss;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("pn_step", &pn_step, "One Ivis step with the PN loss: forward, loss, backward (gradients into grads)");
}
