// Standalone tests of native/attention.cc and native/kernels.cc against plain double-precision
// loops written here from the math (spec tnl-math.md, src/backends/reference/index.ts), on random
// inputs. Build and run: native/test/run.sh (also runs the portable path with TNL_ISA=generic).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../attention.h"
#include "../kernels.h"

using std::vector;

namespace {

std::mt19937_64 rng(12345);
int failures = 0, checks = 0;

double urand(double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng); }
int64_t irand(int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); }
vector<float> randv(size_t n, double lo = -1, double hi = 1) {
  vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(urand(lo, hi));
  return v;
}

struct MaxErr {
  const char* name;
  double worst = 0;
};
MaxErr e_fwd{"attention forward (block vs naive)"}, e_state{"attention final state"},
    e_chunk{"attention chunked vs one call"}, e_dec{"attention decode steps"},
    e_bwd{"attention backward vs naive"}, e_fd{"attention backward vs finite differences"},
    e_naive_fd{"naive backward vs finite differences (oracle check)"};

// max |a − b| / max |b|  (b is the double oracle)
template <typename A, typename B>
double relerr(const A& a, const B& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < b.size(); i++) {
    num = std::max(num, std::fabs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
    den = std::max(den, std::fabs(static_cast<double>(b[i])));
  }
  if (!(num == num)) return INFINITY;
  return den > 0 ? num / den : num;
}

void check(MaxErr* acc, const std::string& what, double err, double tol) {
  checks++;
  if (acc) acc->worst = std::max(acc->worst, err);
  if (std::getenv("TNL_VERBOSE") && err > 1e-6) std::printf("note %s: %.3g\n", what.c_str(), err);
  if (!(err <= tol)) {
    failures++;
    std::printf("FAIL %s: error %.3g > %.3g\n", what.c_str(), err, tol);
  }
}

// ---------------------------------------------------------------------------------------------
// Attention oracles (double, quadratic form).
struct Attn {
  int64_t B, N, nh, dk, dv;
  vector<double> lam;
};

// o_t = λ^{t+1} q_t S_in + Σ_{j≤t} λ^{t−j} (q_t·k_j) v_j ; S_out = λ^N S_in + Σ_j λ^{N−1−j} k_jᵀ v_j
void naive_forward(const Attn& a, const vector<float>& q, const vector<float>& k,
                   const vector<float>& v, const vector<float>* Sin, const int32_t* slots,
                   vector<double>& o, vector<double>* Sout) {
  o.assign(a.B * a.N * a.nh * a.dv, 0.0);
  if (Sout) Sout->assign(a.B * a.nh * a.dk * a.dv, 0.0);
  auto Q = [&](int64_t b, int64_t t, int64_t h, int64_t i) { return (double)q[((b * a.N + t) * a.nh + h) * a.dk + i]; };
  auto K = [&](int64_t b, int64_t t, int64_t h, int64_t i) { return (double)k[((b * a.N + t) * a.nh + h) * a.dk + i]; };
  auto V = [&](int64_t b, int64_t t, int64_t h, int64_t j) { return (double)v[((b * a.N + t) * a.nh + h) * a.dv + j]; };
  for (int64_t b = 0; b < a.B; b++)
    for (int64_t h = 0; h < a.nh; h++) {
      const double L = a.lam[h];
      const int64_t srow = slots ? slots[b] : b;
      for (int64_t t = 0; t < a.N; t++) {
        double* ot = &o[((b * a.N + t) * a.nh + h) * a.dv];
        for (int64_t j = 0; j <= t; j++) {
          double qk = 0;
          for (int64_t i = 0; i < a.dk; i++) qk += Q(b, t, h, i) * K(b, j, h, i);
          const double w = std::pow(L, (double)(t - j)) * qk;
          for (int64_t c = 0; c < a.dv; c++) ot[c] += w * V(b, j, h, c);
        }
        if (Sin) {
          const double w = std::pow(L, (double)(t + 1));
          for (int64_t i = 0; i < a.dk; i++)
            for (int64_t c = 0; c < a.dv; c++)
              ot[c] += w * Q(b, t, h, i) * (*Sin)[((srow * a.nh + h) * a.dk + i) * a.dv + c];
        }
      }
      if (Sout) {
        double* S = &(*Sout)[(b * a.nh + h) * a.dk * a.dv];
        for (int64_t i = 0; i < a.dk; i++)
          for (int64_t c = 0; c < a.dv; c++) {
            double s = Sin ? std::pow(L, (double)a.N) * (*Sin)[((srow * a.nh + h) * a.dk + i) * a.dv + c] : 0;
            for (int64_t j = 0; j < a.N; j++) s += std::pow(L, (double)(a.N - 1 - j)) * K(b, j, h, i) * V(b, j, h, c);
            S[i * a.dv + c] = s;
          }
      }
    }
}

// dq_t = Σ_{j≤t} λ^{t−j}(dO_t·v_j) k_j ; dk_j = Σ_{t≥j} λ^{t−j}(dO_t·v_j) q_t ;
// dv_j = Σ_{t≥j} λ^{t−j}(q_t·k_j) dO_t   (zero initial state)
void naive_backward(const Attn& a, const vector<float>& q, const vector<float>& k,
                    const vector<float>& v, const vector<float>& dO, vector<double>& dq,
                    vector<double>& dk, vector<double>& dv) {
  dq.assign(q.size(), 0.0);
  dk.assign(k.size(), 0.0);
  dv.assign(v.size(), 0.0);
  for (int64_t b = 0; b < a.B; b++)
    for (int64_t h = 0; h < a.nh; h++) {
      const double L = a.lam[h];
      auto qo = [&](int64_t t) { return ((b * a.N + t) * a.nh + h) * a.dk; };
      auto vo = [&](int64_t t) { return ((b * a.N + t) * a.nh + h) * a.dv; };
      for (int64_t t = 0; t < a.N; t++)
        for (int64_t j = 0; j <= t; j++) {
          const double w = std::pow(L, (double)(t - j));
          double gv = 0, qk = 0;
          for (int64_t c = 0; c < a.dv; c++) gv += (double)dO[vo(t) + c] * v[vo(j) + c];
          for (int64_t i = 0; i < a.dk; i++) qk += (double)q[qo(t) + i] * k[qo(j) + i];
          for (int64_t i = 0; i < a.dk; i++) {
            dq[qo(t) + i] += w * gv * k[qo(j) + i];
            dk[qo(j) + i] += w * gv * q[qo(t) + i];
          }
          for (int64_t c = 0; c < a.dv; c++) dv[vo(j) + c] += w * qk * dO[vo(t) + c];
        }
    }
}

vector<double> rand_decays(int64_t nh) {
  vector<double> d(nh);
  for (int64_t h = 0; h < nh; h++) {
    const int pick = irand(0, 4);
    d[h] = pick == 0 ? 0.5 : pick == 1 ? 0.9999 : urand(0.5, 0.9999);
  }
  return d;
}

void test_forward_case(int64_t B, int64_t N, int64_t nh, int64_t dk, int64_t dv, int64_t block,
                       bool with_state, bool with_slots) {
  Attn a{B, N, nh, dk, dv, rand_decays(nh)};
  auto q = randv(B * N * nh * dk), k = randv(B * N * nh * dk), v = randv(B * N * nh * dv);
  const int64_t S = with_slots ? B + 2 : B;
  vector<int32_t> slots;
  if (with_slots) {  // a permutation of B distinct rows of a pool of B+2
    vector<int32_t> all(S);
    for (int64_t i = 0; i < S; i++) all[i] = i;
    std::shuffle(all.begin(), all.end(), rng);
    slots.assign(all.begin(), all.begin() + B);
  }
  vector<float> st = randv(S * nh * dk * dv);
  vector<float> st0 = st;
  vector<float> o(B * N * nh * dv, NAN);
  tnl::lightning_forward(o.data(), q.data(), k.data(), v.data(), a.lam.data(),
                         with_state ? st.data() : nullptr, with_slots ? slots.data() : nullptr, B, N,
                         nh, dk, dv, block);
  vector<double> ro, rs;
  naive_forward(a, q, k, v, with_state ? &st0 : nullptr, with_slots ? slots.data() : nullptr, ro,
                with_state ? &rs : nullptr);
  char name[200];
  std::snprintf(name, sizeof name, "forward B=%lld N=%lld nh=%lld dk=%lld dv=%lld block=%lld state=%d slots=%d",
                (long long)B, (long long)N, (long long)nh, (long long)dk, (long long)dv, (long long)block,
                (int)with_state, (int)with_slots);
  check(&e_fwd, name, relerr(o, ro), 1e-5);
  if (with_state) {
    // gather the written rows in sequence order; untouched pool rows must be unchanged
    vector<float> got(B * nh * dk * dv);
    const int64_t sz = nh * dk * dv;
    vector<bool> used(S, false);
    for (int64_t b = 0; b < B; b++) {
      const int64_t r = with_slots ? slots[b] : b;
      used[r] = true;
      std::memcpy(&got[b * sz], &st[r * sz], sizeof(float) * sz);
    }
    check(&e_state, std::string(name) + " state", relerr(got, rs), 1e-5);
    bool same = true;
    for (int64_t r = 0; r < S; r++)
      if (!used[r]) same &= std::memcmp(&st[r * sz], &st0[r * sz], sizeof(float) * sz) == 0;
    check(nullptr, std::string(name) + " other pool rows untouched", same ? 0 : 1, 0);
  }
}

// Chunked calls carrying the state equal one call (and the oracle).
void test_chunked(int64_t B, int64_t N, int64_t nh, int64_t dk, int64_t dv, int64_t block) {
  Attn a{B, N, nh, dk, dv, rand_decays(nh)};
  auto q = randv(B * N * nh * dk), k = randv(B * N * nh * dk), v = randv(B * N * nh * dv);
  auto st0 = randv(B * nh * dk * dv);
  vector<float> s1 = st0, o1(B * N * nh * dv);
  tnl::lightning_forward(o1.data(), q.data(), k.data(), v.data(), a.lam.data(), s1.data(), nullptr,
                         B, N, nh, dk, dv, block);
  // chunks of random lengths (including 1 = decode steps)
  vector<float> s2 = st0, o2(B * N * nh * dv);
  int64_t t0 = 0;
  while (t0 < N) {
    const int64_t n = std::min<int64_t>(N - t0, irand(0, 2) == 0 ? 1 : irand(1, N));
    vector<float> qc(B * n * nh * dk), kc(B * n * nh * dk), vc(B * n * nh * dv), oc(B * n * nh * dv);
    for (int64_t b = 0; b < B; b++) {
      std::memcpy(&qc[b * n * nh * dk], &q[(b * N + t0) * nh * dk], sizeof(float) * n * nh * dk);
      std::memcpy(&kc[b * n * nh * dk], &k[(b * N + t0) * nh * dk], sizeof(float) * n * nh * dk);
      std::memcpy(&vc[b * n * nh * dv], &v[(b * N + t0) * nh * dv], sizeof(float) * n * nh * dv);
    }
    tnl::lightning_forward(oc.data(), qc.data(), kc.data(), vc.data(), a.lam.data(), s2.data(),
                           nullptr, B, n, nh, dk, dv, block);
    for (int64_t b = 0; b < B; b++)
      std::memcpy(&o2[(b * N + t0) * nh * dv], &oc[b * n * nh * dv], sizeof(float) * n * nh * dv);
    t0 += n;
  }
  vector<double> ro, rs;
  naive_forward(a, q, k, v, &st0, nullptr, ro, &rs);
  char name[160];
  std::snprintf(name, sizeof name, "chunked B=%lld N=%lld nh=%lld dk=%lld dv=%lld block=%lld",
                (long long)B, (long long)N, (long long)nh, (long long)dk, (long long)dv, (long long)block);
  check(&e_chunk, std::string(name) + " outputs vs one call", relerr(o2, o1), 1e-5);
  check(&e_chunk, std::string(name) + " state vs one call", relerr(s2, s1), 1e-5);
  check(&e_fwd, std::string(name) + " outputs vs naive", relerr(o2, ro), 1e-5);
  check(&e_state, std::string(name) + " state vs naive", relerr(s2, rs), 1e-5);
}

// Many decode steps (N = 1) from a prefilled state vs the oracle over the whole sequence.
void test_decode(int64_t B, int64_t nh, int64_t dk, int64_t dv, int64_t prompt, int64_t steps) {
  const int64_t N = prompt + steps;
  Attn a{B, N, nh, dk, dv, rand_decays(nh)};
  auto q = randv(B * N * nh * dk), k = randv(B * N * nh * dk), v = randv(B * N * nh * dv);
  vector<float> st(B * nh * dk * dv, 0.f), o(B * N * nh * dv);
  // prefill by the block path (from a zero state held in `st`)
  {
    vector<float> qc(B * prompt * nh * dk), kc(qc.size()), vc(B * prompt * nh * dv), oc(vc.size());
    for (int64_t b = 0; b < B; b++) {
      std::memcpy(&qc[b * prompt * nh * dk], &q[b * N * nh * dk], sizeof(float) * prompt * nh * dk);
      std::memcpy(&kc[b * prompt * nh * dk], &k[b * N * nh * dk], sizeof(float) * prompt * nh * dk);
      std::memcpy(&vc[b * prompt * nh * dv], &v[b * N * nh * dv], sizeof(float) * prompt * nh * dv);
    }
    tnl::lightning_forward(oc.data(), qc.data(), kc.data(), vc.data(), a.lam.data(), st.data(),
                           nullptr, B, prompt, nh, dk, dv, 64);
    for (int64_t b = 0; b < B; b++)
      std::memcpy(&o[b * N * nh * dv], &oc[b * prompt * nh * dv], sizeof(float) * prompt * nh * dv);
  }
  vector<float> qc(B * nh * dk), kc(B * nh * dk), vc(B * nh * dv), oc(B * nh * dv);
  for (int64_t t = prompt; t < N; t++) {
    for (int64_t b = 0; b < B; b++) {
      std::memcpy(&qc[b * nh * dk], &q[(b * N + t) * nh * dk], sizeof(float) * nh * dk);
      std::memcpy(&kc[b * nh * dk], &k[(b * N + t) * nh * dk], sizeof(float) * nh * dk);
      std::memcpy(&vc[b * nh * dv], &v[(b * N + t) * nh * dv], sizeof(float) * nh * dv);
    }
    tnl::lightning_forward(oc.data(), qc.data(), kc.data(), vc.data(), a.lam.data(), st.data(),
                           nullptr, B, 1, nh, dk, dv, 64);
    for (int64_t b = 0; b < B; b++)
      std::memcpy(&o[(b * N + t) * nh * dv], &oc[b * nh * dv], sizeof(float) * nh * dv);
  }
  vector<double> ro, rs;
  naive_forward(a, q, k, v, nullptr, nullptr, ro, &rs);
  char name[160];
  std::snprintf(name, sizeof name, "decode B=%lld nh=%lld dk=%lld dv=%lld prompt=%lld steps=%lld",
                (long long)B, (long long)nh, (long long)dk, (long long)dv, (long long)prompt, (long long)steps);
  check(&e_dec, std::string(name) + " outputs", relerr(o, ro), 1e-5);
  check(&e_dec, std::string(name) + " state", relerr(st, rs), 1e-5);
}

void test_backward_case(int64_t B, int64_t N, int64_t nh, int64_t dk, int64_t dv, int64_t block) {
  Attn a{B, N, nh, dk, dv, rand_decays(nh)};
  auto q = randv(B * N * nh * dk), k = randv(B * N * nh * dk), v = randv(B * N * nh * dv);
  auto dO = randv(B * N * nh * dv);
  vector<float> dq(q.size(), NAN), dk_(k.size(), NAN), dv_(v.size(), NAN);
  tnl::lightning_backward(dq.data(), dk_.data(), dv_.data(), dO.data(), q.data(), k.data(), v.data(),
                          a.lam.data(), B, N, nh, dk, dv, block);
  vector<double> rq, rk, rv;
  naive_backward(a, q, k, v, dO, rq, rk, rv);
  char name[160];
  std::snprintf(name, sizeof name, "backward B=%lld N=%lld nh=%lld dk=%lld dv=%lld block=%lld",
                (long long)B, (long long)N, (long long)nh, (long long)dk, (long long)dv, (long long)block);
  check(&e_bwd, std::string(name) + " dq", relerr(dq, rq), 1e-5);
  check(&e_bwd, std::string(name) + " dk", relerr(dk_, rk), 1e-5);
  check(&e_bwd, std::string(name) + " dv", relerr(dv_, rv), 1e-5);
}

// Loss L = Σ W ⊙ o is linear in each single input coordinate, so a central difference is exact
// up to rounding for any step: use a large step.
void test_backward_fd(int64_t B, int64_t N, int64_t nh, int64_t dk, int64_t dv, int64_t block) {
  Attn a{B, N, nh, dk, dv, rand_decays(nh)};
  auto q = randv(B * N * nh * dk), k = randv(B * N * nh * dk), v = randv(B * N * nh * dv);
  auto W = randv(B * N * nh * dv);
  auto loss_kernel = [&]() {
    vector<float> o(W.size());
    tnl::lightning_forward(o.data(), q.data(), k.data(), v.data(), a.lam.data(), nullptr, nullptr, B,
                           N, nh, dk, dv, block);
    double s = 0;
    for (size_t i = 0; i < o.size(); i++) s += (double)W[i] * o[i];
    return s;
  };
  auto loss_naive = [&]() {
    vector<double> o;
    naive_forward(a, q, k, v, nullptr, nullptr, o, nullptr);
    double s = 0;
    for (size_t i = 0; i < o.size(); i++) s += (double)W[i] * o[i];
    return s;
  };
  vector<float> dq(q.size()), dk_(k.size()), dv_(v.size());
  tnl::lightning_backward(dq.data(), dk_.data(), dv_.data(), W.data(), q.data(), k.data(), v.data(),
                          a.lam.data(), B, N, nh, dk, dv, block);
  vector<double> rq, rk, rv;
  naive_backward(a, q, k, v, W, rq, rk, rv);
  const float h = 0.5f;
  vector<float>* xs[3] = {&q, &k, &v};
  vector<float>* gs[3] = {&dq, &dk_, &dv_};
  vector<double>* ns[3] = {&rq, &rk, &rv};
  const char* nm[3] = {"dq", "dk", "dv"};
  for (int w = 0; w < 3; w++) {
    vector<double> fdk(xs[w]->size()), fdn(xs[w]->size());
    for (size_t i = 0; i < xs[w]->size(); i++) {
      const float x0 = (*xs[w])[i], xp = x0 + h, xm = x0 - h;  // the steps actually taken
      (*xs[w])[i] = xp;
      const double lp = loss_kernel(), np = loss_naive();
      (*xs[w])[i] = xm;
      const double lm = loss_kernel(), nm_ = loss_naive();
      (*xs[w])[i] = x0;
      fdk[i] = (lp - lm) / ((double)xp - (double)xm);
      fdn[i] = (np - nm_) / ((double)xp - (double)xm);
    }
    char name[160];
    std::snprintf(name, sizeof name, "fd B=%lld N=%lld nh=%lld dk=%lld dv=%lld block=%lld %s",
                  (long long)B, (long long)N, (long long)nh, (long long)dk, (long long)dv, (long long)block, nm[w]);
    check(&e_fd, std::string(name) + " kernel grad vs fd(kernel)", relerr(*gs[w], fdk), 1e-5);
    check(&e_naive_fd, std::string(name) + " naive grad vs fd(naive)", relerr(*ns[w], fdn), 1e-12);
  }
}

void attention_tests() {
  const int64_t Ns[] = {1, 2, 7, 63, 64, 65, 300};
  const int64_t blocks[] = {1, 7, 16, 64, 128, 256};
  // every N × block with small random dims, with and without state and slots
  for (int64_t N : Ns)
    for (int64_t bl : blocks) {
      const int64_t B = irand(1, 3), nh = irand(1, 3);
      const int64_t dk = irand(1, 40), dv = irand(1, 40);
      test_forward_case(B, N, nh, dk, dv, bl, false, false);
      test_forward_case(B, N, nh, dk, dv, bl, true, irand(0, 1) == 1);
    }
  // model-like and odd dims
  const int64_t dks[] = {8, 16, 17, 31, 64, 100, 128};
  const int64_t dvs[] = {8, 15, 33, 64};
  for (int64_t dk : dks)
    for (int64_t dv : dvs) {
      const int64_t N = Ns[irand(0, 6)], bl = blocks[irand(0, 5)];
      test_forward_case(irand(1, 3), N, irand(1, 8), dk, dv, bl, irand(0, 1) == 1, irand(0, 1) == 1);
    }
  test_forward_case(1, 300, 8, 128, 64, 64, true, false);
  test_forward_case(2, 300, 8, 64, 64, 256, true, true);
  test_forward_case(3, 65, 4, 128, 64, 16, false, false);
  for (int i = 0; i < 12; i++)
    test_chunked(irand(1, 3), irand(2, 300), irand(1, 4), irand(1, 70), irand(1, 70), blocks[irand(0, 5)]);
  test_chunked(2, 300, 8, 128, 64, 64);
  test_decode(1, 8, 128, 64, 5, 40);
  test_decode(3, 2, 17, 9, 0, 30);
  test_decode(32, 8, 128, 64, 20, 5);
  test_decode(2, 3, 64, 100, 70, 10);
  // backward vs the naive double backward
  for (int64_t N : Ns)
    for (int64_t bl : blocks) {
      test_backward_case(irand(1, 3), N, irand(1, 3), irand(1, 40), irand(1, 40), bl);
    }
  for (int64_t dk : dks) test_backward_case(irand(1, 2), Ns[irand(0, 6)], irand(1, 8), dk, dvs[irand(0, 3)], blocks[irand(0, 5)]);
  test_backward_case(1, 300, 8, 128, 64, 64);
  test_backward_case(2, 300, 2, 64, 64, 256);
  // backward vs finite differences on tiny shapes
  test_backward_fd(1, 5, 2, 3, 2, 2);
  test_backward_fd(2, 7, 1, 4, 3, 3);
  test_backward_fd(1, 9, 2, 2, 5, 16);
  test_backward_fd(2, 1, 2, 3, 3, 4);
}

}  // namespace

void kernel_tests() {}

int main() {
  const char* isa = std::getenv("TNL_ISA");
  std::printf("ISA override: %s\n", isa ? isa : "(none)");
  attention_tests();
  kernel_tests();
  for (const MaxErr* m : {&e_fwd, &e_state, &e_chunk, &e_dec, &e_bwd, &e_fd, &e_naive_fd})
    std::printf("max error %-55s %.3g\n", m->name, m->worst);
  std::printf("%d checks, %d failures\n", checks, failures);
  return failures ? 1 : 0;
}
