// Running top-k selection over score blocks, one candidate buffer per query row.
//
// Why not at::topk per block: it partially sorts every block row (O(block) work with a large
// constant), which on CPU costs as much as the GEMM that produced the scores. Here each row keeps a
// threshold (the current k-th best score); a block row is scanned with a vectorisable compare and
// only the few scores above the threshold are appended to the row's buffer. When the buffer
// fills, it is cut back to the best k with nth_element and the threshold rises. On real and
// random data only O(k log(N/k)) scores per row ever pass the filter.
//
// Order: score descending, then row position ascending. Ties at the k-th place are therefore
// won by the vector added first (lower position), independent of block sizes and threads.
#pragma once

#include <cstdint>
#include <limits>
#include <vector>

namespace gainrag {

class RunningTopK {
 public:
  struct Entry {
    float score;
    int64_t pos;
  };

  RunningTopK(int64_t rows, int64_t k);

  // Offers scores[0..n) of `row`, whose first element is corpus position `base`. Positions must be
  // offered in increasing order per row (the tie rule relies on it). Rows may be pushed from
  // different threads concurrently, one thread per row at a time.
  void Push(int64_t row, const float* scores, int64_t n, int64_t base);

  // Writes the best k per row, best first, into scores_out[rows*k] / pos_out[rows*k]. Rows with
  // fewer than k finite scores (only possible with -inf/NaN scores) are padded with -inf / -1.
  void Finish(float* scores_out, int64_t* pos_out);

  int64_t k() const { return k_; }

 private:
  void Compact(int64_t row);

  int64_t rows_;
  int64_t k_;
  int64_t capacity_;
  std::vector<Entry> entries_;      // rows_ * capacity_
  std::vector<int64_t> count_;      // entries used per row
  std::vector<float> threshold_;    // score a new entry must exceed
};

}  // namespace gainrag
