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
#include <tuple>
#include <vector>

#include "../attention.h"
#include "../kernels.h"
#include "../threadpool.h"

using std::vector;

namespace {

// TNL_TEST_SEED=<n> changes the inputs (default 12345).
std::mt19937_64 rng(std::getenv("TNL_TEST_SEED") ? std::strtoull(std::getenv("TNL_TEST_SEED"), nullptr, 10) : 12345);
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

// ---------------------------------------------------------------------------------------------
// Row kernels vs double loops written from the reference backend's definitions.
namespace {

MaxErr e_k{"row kernels (worst of all, see per-kernel lines)"};
double g_worst_by[32];
const char* g_name_by[32];
int g_nk = 0;
void kcheck(const char* kernel, const std::string& what, double err, double tol) {
  int i = 0;
  while (i < g_nk && std::strcmp(g_name_by[i], kernel) != 0) i++;
  if (i == g_nk) { g_name_by[g_nk] = kernel; g_worst_by[g_nk++] = 0; }
  g_worst_by[i] = std::max(g_worst_by[i], err);
  check(&e_k, std::string(kernel) + " " + what, err, tol);
}

double sigmoid_d(double x) { return 1.0 / (1.0 + std::exp(-x)); }

uint16_t to_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
double from_bf16(uint16_t b) {
  uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

vector<int32_t> rand_ids(int64_t T, int64_t V) {
  vector<int32_t> ids(T);
  for (auto& x : ids) x = static_cast<int32_t>(irand(0, V - 1));
  return ids;
}

void test_embedding() {
  for (auto [T, V, D] : {std::tuple<int64_t, int64_t, int64_t>{1, 5, 3}, {7, 11, 17}, {300, 50, 129}, {2000, 100, 64}}) {
    auto table = randv(V * D);
    auto ids = rand_ids(T, V);
    const float scale = static_cast<float>(urand(0.5, 40));
    vector<float> out(T * D);
    tnl::embedding_f32(out.data(), table.data(), ids.data(), T, D, scale);
    vector<double> ref(T * D);
    for (int64_t t = 0; t < T; t++)
      for (int64_t d = 0; d < D; d++) ref[t * D + d] = (double)scale * table[ids[t] * D + d];
    kcheck("embedding_f32", "T=" + std::to_string(T), relerr(out, ref), 1e-7);
    vector<uint16_t> tb(V * D);
    for (size_t i = 0; i < tb.size(); i++) tb[i] = to_bf16(table[i]);
    tnl::embedding_bf16(out.data(), tb.data(), ids.data(), T, D, scale);
    for (int64_t t = 0; t < T; t++)
      for (int64_t d = 0; d < D; d++) ref[t * D + d] = (double)scale * from_bf16(tb[ids[t] * D + d]);
    kcheck("embedding_bf16", "T=" + std::to_string(T), relerr(out, ref), 1e-7);
    // backward: repeated ids, a padding id, accumulation into existing values
    const int32_t pad = ids[0];
    auto dout = randv(T * D);
    auto dt = randv(V * D);
    vector<double> rd(dt.begin(), dt.end());
    for (int64_t t = 0; t < T; t++) {
      if (ids[t] == pad) continue;
      for (int64_t d = 0; d < D; d++) rd[ids[t] * D + d] += (double)scale * dout[t * D + d];
    }
    tnl::embedding_backward(dt.data(), dout.data(), ids.data(), T, D, scale, pad);
    kcheck("embedding_backward", "T=" + std::to_string(T), relerr(dt, rd), 2e-6);
  }
}

void test_srmsnorm() {
  for (auto [rows, D] : {std::pair<int64_t, int64_t>{1, 1}, {3, 7}, {5, 1024}, {200, 513}, {64, 4096}}) {
    auto x = randv(rows * D, -3, 3);
    if (rows > 2) for (int64_t d = 0; d < D; d++) x[2 * D + d] *= 1e-4f;  // a row near eps
    const float eps = 1e-6f;
    vector<float> y(rows * D), rs(rows);
    tnl::srmsnorm(y.data(), rs.data(), x.data(), rows, D, eps);
    vector<double> ry(rows * D), rrs(rows);
    for (int64_t r = 0; r < rows; r++) {
      double ss = 0;
      for (int64_t d = 0; d < D; d++) ss += (double)x[r * D + d] * x[r * D + d];
      rrs[r] = 1 / std::sqrt(ss / D + eps);
      for (int64_t d = 0; d < D; d++) ry[r * D + d] = x[r * D + d] * rrs[r];
    }
    const std::string nm = "rows=" + std::to_string(rows) + " D=" + std::to_string(D);
    kcheck("srmsnorm", nm + " y", relerr(y, ry), 1e-6);
    kcheck("srmsnorm", nm + " rstd", relerr(rs, rrs), 1e-6);
    auto dy = randv(rows * D);
    for (bool accumulate : {false, true}) {
      auto dx = randv(rows * D);
      vector<double> rdx(dx.begin(), dx.end());
      for (int64_t r = 0; r < rows; r++) {
        double dot = 0;
        for (int64_t d = 0; d < D; d++) dot += (double)dy[r * D + d] * y[r * D + d];
        dot /= D;
        for (int64_t d = 0; d < D; d++) {
          const double g = (double)rs[r] * (dy[r * D + d] - (double)y[r * D + d] * dot);
          rdx[r * D + d] = accumulate ? rdx[r * D + d] + g : g;
        }
      }
      tnl::srmsnorm_backward(dx.data(), dy.data(), y.data(), rs.data(), rows, D, accumulate);
      // dy − y·mean(dy⊙y) cancels (exactly so for D = 1): measure against the terms' size rs·|dy|
      vector<double> scale_ref = rdx;
      double term = 0;
      for (int64_t r = 0; r < rows; r++)
        for (int64_t d = 0; d < D; d++) term = std::max(term, (double)rs[r] * std::fabs(dy[r * D + d]));
      scale_ref.push_back(term);
      vector<float> dx_ext = dx;
      dx_ext.push_back(static_cast<float>(term));
      kcheck("srmsnorm_backward", nm + (accumulate ? " accumulate" : ""), relerr(dx_ext, scale_ref), 2e-6);
    }
  }
}

void test_gla_qkv() {
  struct C { int64_t T, heads, dh; bool theta, mask; int32_t pos0; };
  for (C c : {C{1, 1, 1, false, false, 0}, C{5, 2, 3, true, true, 0}, C{33, 3, 17, true, false, 7},
              C{64, 8, 64, true, true, 0}, C{20, 4, 16, false, true, 0}, C{17, 2, 40, true, false, 100000},
              C{9, 8, 64, true, false, 2000000000}}) {
    const int64_t H = c.heads * c.dh, dk = c.theta ? 2 * c.dh : c.dh, T = c.T;
    auto x = randv(T * 4 * H, -6, 6);
    vector<float> theta(H);
    for (int64_t i = 0; i < H; i++) theta[i] = static_cast<float>(std::pow(10000.0, -2.0 * i / H));
    vector<int32_t> pos(T), vm(T);
    for (int64_t t = 0; t < T; t++) {
      pos[t] = c.pos0 + (int32_t)t;
      vm[t] = irand(0, 3) != 0;
    }
    vector<float> q(T * c.heads * dk), k(q.size()), v(T * H);
    tnl::gla_qkv(q.data(), k.data(), v.data(), x.data(), T, c.heads, c.dh, c.theta ? theta.data() : nullptr,
                 c.theta ? pos.data() : nullptr, c.mask ? vm.data() : nullptr);
    vector<double> rq(q.size()), rk(k.size()), rv(v.size());
    for (int64_t t = 0; t < T; t++) {
      for (int64_t h = 0; h < c.heads; h++)
        for (int64_t i = 0; i < c.dh; i++) {
          const double xq = x[t * 4 * H + h * c.dh + i], xk = x[t * 4 * H + H + h * c.dh + i];
          const double sq = xq * sigmoid_d(xq), sk = xk * sigmoid_d(xk);
          const int64_t o = t * c.heads * dk + h * dk + i;
          if (c.theta) {
            const double a = (double)theta[h * c.dh + i] * pos[t];
            rq[o] = sq * std::cos(a); rq[o + c.dh] = sq * std::sin(a);
            rk[o] = sk * std::cos(a); rk[o + c.dh] = sk * std::sin(a);
          } else {
            rq[o] = sq; rk[o] = sk;
          }
        }
      for (int64_t i = 0; i < H; i++) rv[t * H + i] = (!c.mask || vm[t]) ? x[t * 4 * H + 2 * H + i] : 0;
    }
    const std::string nm = "T=" + std::to_string(T) + " heads=" + std::to_string(c.heads) + " dh=" +
                           std::to_string(c.dh) + (c.theta ? " lrpe pos0=" + std::to_string(c.pos0) : "");
    kcheck("gla_qkv", nm + " q", relerr(q, rq), 1e-6);
    kcheck("gla_qkv", nm + " k", relerr(k, rk), 1e-6);
    kcheck("gla_qkv", nm + " v", relerr(v, rv), 0);
    // element-wise: every value to a few ulps of its own size
    double worst = 0;
    for (size_t i = 0; i < q.size(); i++) worst = std::max(worst, std::fabs(q[i] - rq[i]) / (std::fabs(rq[i]) + 1e-30));
    if (!c.theta) kcheck("gla_qkv", nm + " silu element-wise relative", worst, 6e-7);
    if (c.theta) {  // element-wise against |silu(q̃)|: cos and sin to ~1e-7 absolute at any position
      double w2 = 0;
      for (int64_t t = 0; t < T; t++)
        for (int64_t h = 0; h < c.heads; h++)
          for (int64_t i = 0; i < c.dh; i++) {
            const double xq = x[t * 4 * H + h * c.dh + i], sq = std::fabs(xq * sigmoid_d(xq)) + 1e-30;
            const int64_t o = t * c.heads * dk + h * dk + i;
            w2 = std::max(w2, std::max(std::fabs(q[o] - rq[o]), std::fabs(q[o + c.dh] - rq[o + c.dh])) / sq);
          }
      kcheck("gla_qkv", nm + " lrpe element-wise (relative to |silu|)", w2, 5e-7);
    }

    // backward
    auto dq = randv(q.size()), dkk = randv(k.size()), dv = randv(v.size());
    auto g = randv(T * 4 * H);  // columns [3H, 4H) must stay as they were
    const vector<float> g0 = g;
    auto dth = randv(H);
    vector<double> rdth(dth.begin(), dth.end()), rg(g.size());
    for (size_t i = 0; i < g.size(); i++) rg[i] = g[i];
    for (int64_t t = 0; t < T; t++) {
      for (int64_t h = 0; h < c.heads; h++)
        for (int64_t i = 0; i < c.dh; i++) {
          const double xq = x[t * 4 * H + h * c.dh + i], xk = x[t * 4 * H + H + h * c.dh + i];
          const double sgq = sigmoid_d(xq), sgk = sigmoid_d(xk);
          const double sq = xq * sgq, sk = xk * sgk;
          const double dsq = sgq * (1 + xq * (1 - sgq)), dsk = sgk * (1 + xk * (1 - sgk));
          const int64_t o = t * c.heads * dk + h * dk + i;
          double gq, gk;
          if (c.theta) {
            const double p = pos[t], a = (double)theta[h * c.dh + i] * p, cs = std::cos(a), sn = std::sin(a);
            gq = dq[o] * cs + dq[o + c.dh] * sn;
            gk = dkk[o] * cs + dkk[o + c.dh] * sn;
            rdth[h * c.dh + i] += p * (sq * (-dq[o] * sn + dq[o + c.dh] * cs) + sk * (-dkk[o] * sn + dkk[o + c.dh] * cs));
          } else {
            gq = dq[o]; gk = dkk[o];
          }
          rg[t * 4 * H + h * c.dh + i] = gq * dsq;
          rg[t * 4 * H + H + h * c.dh + i] = gk * dsk;
        }
      for (int64_t i = 0; i < H; i++) rg[t * 4 * H + 2 * H + i] = (!c.mask || vm[t]) ? dv[t * H + i] : 0;
    }
    tnl::gla_qkv_backward(g.data(), c.theta ? dth.data() : nullptr, dq.data(), dkk.data(), dv.data(), x.data(), T,
                          c.heads, c.dh, c.theta ? theta.data() : nullptr, c.theta ? pos.data() : nullptr,
                          c.mask ? vm.data() : nullptr);
    kcheck("gla_qkv_backward", nm + " dqkvu", relerr(g, rg), 1e-6);
    bool untouched = true;
    for (int64_t t = 0; t < T; t++)
      for (int64_t i = 3 * H; i < 4 * H; i++) untouched &= g[t * 4 * H + i] == g0[t * 4 * H + i];
    kcheck("gla_qkv_backward", nm + " u columns untouched", untouched ? 0 : 1, 0);
    // dθ sums p·(…) over T with cancellation; with positions near 2^31 the float inputs (silu,
    // cos, sin to ~1e-7) bound what any fp32 kernel can match.
    if (c.theta) kcheck("gla_qkv_backward", nm + " dtheta", relerr(dth, rdth), c.pos0 > 1000 ? 1e-4 : 1e-5);
  }
}

// silu over a wide range, element-wise against double (exercises the polynomial exp everywhere,
// including underflow and overflow of e^{−x}).
void test_silu_range() {
  const int64_t T = 1, heads = 1, dh = 20001;
  vector<float> x(4 * dh);
  for (int64_t i = 0; i < dh; i++) x[i] = static_cast<float>(-100.0 + 200.0 * i / (dh - 1));
  for (int64_t i = 0; i < dh; i++) x[dh + i] = static_cast<float>(urand(-20, 20));
  vector<float> q(dh), k(dh), v(dh);
  tnl::gla_qkv(q.data(), k.data(), v.data(), x.data(), T, heads, dh, nullptr, nullptr, nullptr);
  double worst = 0;
  for (int64_t w = 0; w < 2; w++)
    for (int64_t i = 0; i < dh; i++) {
      const double xi = x[w * dh + i], r = xi / (1 + std::exp(-xi));
      const double got = w == 0 ? q[i] : k[i];
      if (std::fabs(r) < 1e-33) continue;  // e^{-|x|} is subnormal in float there: fewer bits
      worst = std::max(worst, std::fabs(got - r) / std::fabs(r));
    }
  kcheck("gla_qkv", "silu on [-100, 100], element-wise relative", worst, 4e-7);
}

// Results that sum over rows or tokens must not depend on the thread count.
void test_determinism() {
  const int64_t T = 300, D = 200, V = 60;
  auto ids = rand_ids(T, V);
  auto dout = randv(T * D);
  auto x = randv(1000003);
  const int64_t heads = 4, dh = 16, H = heads * dh;
  auto qkvu = randv(T * 4 * H), dq = randv(T * heads * 2 * dh), dk = randv(T * heads * 2 * dh), dv = randv(T * H);
  vector<float> theta(H);
  for (int64_t i = 0; i < H; i++) theta[i] = static_cast<float>(std::pow(10000.0, -2.0 * i / H));
  vector<int32_t> pos(T);
  for (int64_t t = 0; t < T; t++) pos[t] = (int32_t)t;
  auto logits = randv(T * 5000, -5, 5);
  auto targets = rand_ids(T, 5000);
  auto aq = randv(2 * 200 * 4 * 32), ak = randv(aq.size()), av = randv(2 * 200 * 4 * 16), ado = randv(av.size());
  vector<double> decay{0.9, 0.99, 0.5, 0.999};
  struct R { vector<float> emb, dth, o, g; double ss, loss; };
  auto run = [&]() {
    R r;
    r.emb.assign(V * D, 0.f);
    tnl::embedding_backward(r.emb.data(), dout.data(), ids.data(), T, D, 1.5f, -1);
    r.ss = tnl::sum_squares_f32(x.data(), (int64_t)x.size());
    vector<float> g(T * 4 * H);
    r.dth.assign(H, 0.f);
    tnl::gla_qkv_backward(g.data(), r.dth.data(), dq.data(), dk.data(), dv.data(), qkvu.data(), T, heads, dh,
                          theta.data(), pos.data(), nullptr);
    int64_t count;
    r.loss = tnl::cross_entropy(nullptr, logits.data(), targets.data(), T, 5000, 1.f, &count);
    r.o.assign(av.size(), 0.f);
    tnl::lightning_forward(r.o.data(), aq.data(), ak.data(), av.data(), decay.data(), nullptr, nullptr, 2, 200, 4, 32, 16, 64);
    r.g.assign(aq.size() * 2 + av.size(), 0.f);
    tnl::lightning_backward(r.g.data(), r.g.data() + aq.size(), r.g.data() + 2 * aq.size(), ado.data(), aq.data(),
                            ak.data(), av.data(), decay.data(), 2, 200, 4, 32, 16, 64);
    return r;
  };
  tnl::set_num_threads(1);
  const R a = run();
  tnl::set_num_threads(0);
  const R b = run();
  const bool same = a.emb == b.emb && a.dth == b.dth && a.o == b.o && a.g == b.g && a.ss == b.ss && a.loss == b.loss;
  kcheck("determinism", "1 thread vs " + std::to_string(tnl::num_threads()) + " threads bitwise", same ? 0 : 1, 0);
}

void test_norm_gate() {
  for (auto [T, H] : {std::pair<int64_t, int64_t>{1, 1}, {3, 5}, {17, 512}, {100, 1024}}) {
    auto o = randv(T * H, -2, 2), x = randv(T * 4 * H, -2, 2);
    const float eps = 1e-6f;
    vector<float> a(T * H), rs(T);
    tnl::norm_gate(a.data(), rs.data(), o.data(), x.data(), T, H, eps);
    vector<double> ra(T * H), rrs(T);
    for (int64_t t = 0; t < T; t++) {
      double ss = 0;
      for (int64_t c = 0; c < H; c++) ss += (double)o[t * H + c] * o[t * H + c];
      rrs[t] = 1 / std::sqrt(ss / H + eps);
      for (int64_t c = 0; c < H; c++) ra[t * H + c] = o[t * H + c] * rrs[t] * x[t * 4 * H + 3 * H + c];
    }
    const std::string nm = "T=" + std::to_string(T) + " H=" + std::to_string(H);
    kcheck("norm_gate", nm + " a", relerr(a, ra), 1e-6);
    kcheck("norm_gate", nm + " rstd", relerr(rs, rrs), 1e-6);
    auto dA = randv(T * H);
    vector<float> dO(T * H), g = randv(T * 4 * H);
    const vector<float> g0 = g;
    vector<double> rdO(T * H), rg(g.begin(), g.end());
    for (int64_t t = 0; t < T; t++) {
      double dot = 0;
      for (int64_t c = 0; c < H; c++) {
        const double y = (double)o[t * H + c] * rs[t], u = x[t * 4 * H + 3 * H + c];
        rg[t * 4 * H + 3 * H + c] = dA[t * H + c] * y;
        dot += dA[t * H + c] * u * y;
      }
      dot /= H;
      for (int64_t c = 0; c < H; c++) {
        const double y = (double)o[t * H + c] * rs[t], u = x[t * 4 * H + 3 * H + c];
        rdO[t * H + c] = rs[t] * (dA[t * H + c] * u - y * dot);
      }
    }
    tnl::norm_gate_backward(dO.data(), g.data(), dA.data(), o.data(), rs.data(), x.data(), T, H);
    // as for srmsnorm_backward: against the size of the terms rs·|dA ⊙ u| (H = 1 cancels exactly)
    double term = 0;
    for (int64_t t = 0; t < T; t++)
      for (int64_t c = 0; c < H; c++) term = std::max(term, (double)rs[t] * std::fabs((double)dA[t * H + c] * x[t * 4 * H + 3 * H + c]));
    vector<double> rdO_ext = rdO;
    rdO_ext.push_back(term);
    vector<float> dO_ext = dO;
    dO_ext.push_back(static_cast<float>(term));
    kcheck("norm_gate_backward", nm + " dO", relerr(dO_ext, rdO_ext), 2e-6);
    kcheck("norm_gate_backward", nm + " du", relerr(g, rg), 1e-6);
    bool untouched = true;
    for (int64_t t = 0; t < T; t++)
      for (int64_t i = 0; i < 3 * H; i++) untouched &= g[t * 4 * H + i] == g0[t * 4 * H + i];
    kcheck("norm_gate_backward", nm + " q/k/v columns untouched", untouched ? 0 : 1, 0);
  }
}

void test_sglu() {
  for (auto [T, G] : {std::pair<int64_t, int64_t>{1, 1}, {7, 13}, {300, 1408}}) {
    auto h = randv(T * 2 * G, -3, 3);
    vector<float> m(T * G);
    tnl::sglu_gate(m.data(), h.data(), T, G);
    vector<double> rm(T * G);
    for (int64_t t = 0; t < T; t++)
      for (int64_t c = 0; c < G; c++) rm[t * G + c] = (double)h[t * 2 * G + c] * h[t * 2 * G + G + c];
    kcheck("sglu_gate", "T=" + std::to_string(T), relerr(m, rm), 1e-7);
    auto dm = randv(T * G);
    vector<float> dh(T * 2 * G);
    vector<double> rdh(T * 2 * G);
    for (int64_t t = 0; t < T; t++)
      for (int64_t c = 0; c < G; c++) {
        rdh[t * 2 * G + c] = (double)dm[t * G + c] * h[t * 2 * G + G + c];
        rdh[t * 2 * G + G + c] = (double)dm[t * G + c] * h[t * 2 * G + c];
      }
    tnl::sglu_gate_backward(dh.data(), dm.data(), h.data(), T, G);
    kcheck("sglu_gate_backward", "T=" + std::to_string(T), relerr(dh, rdh), 1e-7);
  }
}

void test_cross_entropy() {
  for (auto [T, V] : {std::pair<int64_t, int64_t>{1, 1}, {1, 2}, {3, 2}, {5, 17}, {9, 1000}, {6, 64001}}) {
    auto x = randv(T * V, -8, 8);
    if (T > 2) {  // a row with a huge spread (exp underflows for most entries)
      for (int64_t i = 0; i < V; i++) x[2 * V + i] = static_cast<float>(urand(-200, 90));
    }
    vector<int32_t> y = rand_ids(T, V);
    if (T > 1) y[1] = -100;
    if (V <= 17) x[y[0]] = 12;  // a confident row: x − max must not lose bits, p_y − 1 must not cancel
    const float scale = static_cast<float>(urand(0.01, 2));
    vector<double> rd(T * V, 0.0);
    double rloss = 0;
    int64_t rcount = 0;
    for (int64_t t = 0; t < T; t++) {
      if (y[t] == -100) continue;
      double mx = -INFINITY;
      for (int64_t i = 0; i < V; i++) mx = std::max(mx, (double)x[t * V + i]);
      double se = 0;
      for (int64_t i = 0; i < V; i++) se += std::exp(x[t * V + i] - mx);
      const double lse = mx + std::log(se);
      rloss += lse - x[t * V + y[t]];
      rcount++;
      for (int64_t i = 0; i < V; i++) rd[t * V + i] = (std::exp(x[t * V + i] - lse) - (i == y[t])) * scale;
    }
    const std::string nm = "T=" + std::to_string(T) + " V=" + std::to_string(V);
    // separate output
    vector<float> d(T * V, NAN);
    int64_t count = -1;
    double loss = tnl::cross_entropy(d.data(), x.data(), y.data(), T, V, scale, &count);
    kcheck("cross_entropy", nm + " loss", std::fabs(loss - rloss) / std::max(1.0, std::fabs(rloss)), 1e-6);
    kcheck("cross_entropy", nm + " count", count == rcount ? 0 : 1, 0);
    kcheck("cross_entropy", nm + " dlogits", relerr(d, rd), 1e-6);
    // no gradient
    count = -1;
    loss = tnl::cross_entropy(nullptr, x.data(), y.data(), T, V, scale, &count);
    kcheck("cross_entropy", nm + " loss (no grad)", std::fabs(loss - rloss) / std::max(1.0, std::fabs(rloss)), 1e-6);
    // dlogits aliasing logits
    vector<float> xa = x;
    loss = tnl::cross_entropy(xa.data(), xa.data(), y.data(), T, V, scale, &count);
    kcheck("cross_entropy", nm + " loss (aliased)", std::fabs(loss - rloss) / std::max(1.0, std::fabs(rloss)), 1e-6);
    kcheck("cross_entropy", nm + " dlogits (aliased)", relerr(xa, rd), 1e-6);
  }
  // all ignored
  vector<float> x = randv(3 * 4), d(12, 1.f);
  vector<int32_t> y(3, -100);
  int64_t count = -1;
  const double loss = tnl::cross_entropy(d.data(), x.data(), y.data(), 3, 4, 1.f, &count);
  bool zero = true;
  for (float v : d) zero &= v == 0.f;
  kcheck("cross_entropy", "all ignored", (loss == 0 && count == 0 && zero) ? 0 : 1, 0);
}

void test_adamw() {
  for (int64_t n : {1, 15, 17, 100003}) {
    for (int64_t step : {1, 2, 1000}) {
      auto p = randv(n), g = randv(n, -3, 3), m = randv(n, -0.1, 0.1), v = randv(n, 0, 0.01);
      const auto p0 = p, m0 = m, v0 = v;
      // the hyperparameters as the kernel receives them (floats)
      const double lr = 3e-4f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, wd = 0.1f, gs = 0.7f;
      vector<double> rp(n), rm(n), rv(n);
      const double bc1 = 1 - std::pow(b1, step), bc2 = 1 - std::pow(b2, step);
      for (int64_t i = 0; i < n; i++) {
        const double gi = g[i] * gs;
        const float mi = static_cast<float>(b1 * m[i] + (1 - b1) * gi);
        const float vi = static_cast<float>(b2 * v[i] + (1 - b2) * gi * gi);
        rm[i] = mi;
        rv[i] = vi;
        rp[i] = p[i] * (1 - lr * wd) - lr * (mi / bc1) / (std::sqrt(vi / bc2) + eps);
      }
      tnl::adamw(p.data(), g.data(), m.data(), v.data(), n, (float)lr, (float)b1, (float)b2, (float)eps,
                 (float)wd, step, (float)gs);
      // element-wise against the size of the summed terms (each result can cancel)
      double wm = 0, wv = 0, wp = 0;
      for (int64_t i = 0; i < n; i++) {
        const double gi = g[i] * gs;
        const double mt = std::fabs(b1 * m0[i]) + std::fabs((1 - b1) * gi), vt = b2 * v0[i] + (1 - b2) * gi * gi;
        const double pt = std::fabs(p0[i]) + lr * (mt / bc1) / (std::sqrt(rv[i] / bc2) + eps);
        wm = std::max(wm, std::fabs(m[i] - rm[i]) / mt);
        wv = std::max(wv, std::fabs(v[i] - rv[i]) / vt);
        wp = std::max(wp, std::fabs(p[i] - rp[i]) / pt);
      }
      const std::string nm = "n=" + std::to_string(n) + " step=" + std::to_string(step);
      kcheck("adamw", nm + " m", wm, 1.2e-7);
      kcheck("adamw", nm + " v", wv, 1.2e-7);
      kcheck("adamw", nm + " p", wp, 1.2e-7);
    }
  }
}

void test_sums() {
  for (int64_t n : {0, 1, 31, 65536, 65537, 300001}) {
    auto x = randv(n, -2, 2);
    double r = 0;
    for (float f : x) r += (double)f * f;
    const double s = tnl::sum_squares_f32(x.data(), n);
    kcheck("sum_squares_f32", "n=" + std::to_string(n), std::fabs(s - r) / std::max(r, 1e-300), 1e-12);
    vector<uint16_t> b(n);
    r = 0;
    for (int64_t i = 0; i < n; i++) {
      b[i] = to_bf16(x[i]);
      r += from_bf16(b[i]) * from_bf16(b[i]);
    }
    const double sb = tnl::sum_squares_bf16(b.data(), n);
    kcheck("sum_squares_bf16", "n=" + std::to_string(n), std::fabs(sb - r) / std::max(r, 1e-300), 1e-12);
    auto y = randv(n), y0 = y;
    tnl::add_inplace(y.data(), x.data(), n);
    vector<double> ry(n);
    for (int64_t i = 0; i < n; i++) ry[i] = (double)y0[i] + x[i];
    kcheck("add_inplace", "n=" + std::to_string(n), relerr(y, ry), 1e-7);
    vector<double> rs(n);
    for (int64_t i = 0; i < n; i++) rs[i] = (double)y0[i] * (double)-0.3f;
    tnl::scale_inplace(y0.data(), n, -0.3f);
    kcheck("scale_inplace", "n=" + std::to_string(n), relerr(y0, rs), 1e-7);
  }
}

}  // namespace

void kernel_tests() {
  test_embedding();
  test_srmsnorm();
  test_gla_qkv();
  test_silu_range();
  test_norm_gate();
  test_sglu();
  test_cross_entropy();
  test_adamw();
  test_sums();
  test_determinism();
  for (int i = 0; i < g_nk; i++) std::printf("max error %-55s %.3g\n", g_name_by[i], g_worst_by[i]);
}

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
