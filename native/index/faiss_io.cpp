#include "index/faiss_io.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include "core/error.h"
#include "index/index_writer.h"

#ifdef GAINRAG_WITH_FAISS
#include <cxxabi.h>
#include <faiss/IVFlib.h>
#include <faiss/IndexFlat.h>
#include <faiss/IndexIVF.h>
#include <faiss/impl/FaissException.h>
#include <faiss/index_io.h>

#include <typeinfo>
#endif

namespace gainrag {

#ifndef GAINRAG_WITH_FAISS

bool FaissAvailable() { return false; }

namespace {
[[noreturn]] void NoFaiss() {
  GR_FAIL(kUnsupported, "this build of gainrag has no FAISS support; install FAISS (Debian: apt-get install "
          "libfaiss-dev) and rebuild the addon (npm run build:native)");
}
}  // namespace

FaissImportResult ImportFaissIndex(const std::string&, const std::string&, at::ScalarType, Metric, const at::Tensor&,
                                   const RunContext&) {
  NoFaiss();
}
std::vector<int64_t> ExportFaissIndex(const std::string&, const std::string&, const RunContext&) { NoFaiss(); }

#else

bool FaissAvailable() { return true; }

namespace {

constexpr int64_t kChunk = 16384;

std::string TypeName(const faiss::Index& index) {
  int status = 0;
  const char* raw = typeid(index).name();
  std::unique_ptr<char, void (*)(void*)> name(abi::__cxa_demangle(raw, nullptr, nullptr, &status), std::free);
  std::string s = status == 0 && name ? name.get() : raw;
  return s.rfind("faiss::", 0) == 0 ? s.substr(7) : s;
}

}  // namespace

FaissImportResult ImportFaissIndex(const std::string& faiss_file, const std::string& dir, at::ScalarType dtype,
                                   Metric metric, const at::Tensor& ids, const RunContext& ctx) {
  std::unique_ptr<faiss::Index> index;
  try {
    index.reset(faiss::read_index(faiss_file.c_str()));
  } catch (const faiss::FaissException& e) {
    GR_FAIL(kData, faiss_file, ": FAISS cannot read it: ", e.msg);
  } catch (const std::bad_alloc&) {
    GR_FAIL(kData, faiss_file, ": FAISS ran out of memory reading it (corrupt sizes?)");
  }
  FaissImportResult result;
  result.type = TypeName(*index);
  result.dim = index->d;
  result.count = index->ntotal;
  GR_CHECK(index->metric_type == faiss::METRIC_INNER_PRODUCT, kUnsupported, faiss_file, ": a ", result.type,
           " with metric ", int(index->metric_type),
           " (L2 is 1); gainrag searches by inner product, as the reference's IndexFlatIP/IndexPQ do");
  GR_CHECK(ids.defined() && ids.numel() == index->ntotal, kData, faiss_file, " holds ", index->ntotal,
           " vectors but its id list has ", ids.defined() ? ids.numel() : 0);
  // IVF indexes reconstruct by id only through a direct map.
  if (faiss::IndexIVF* ivf = faiss::ivflib::try_extract_index_ivf(index.get())) {
    try {
      ivf->make_direct_map(true);
    } catch (const faiss::FaissException& e) {
      GR_FAIL(kUnsupported, faiss_file, ": cannot map the vectors of this ", result.type, ": ", e.msg);
    }
  }
  DenseIndexWriter writer(dir, index->d, dtype, metric);
  at::Tensor buf = at::empty({std::min<int64_t>(kChunk, std::max<int64_t>(1, index->ntotal)), index->d},
                             at::TensorOptions().dtype(at::kFloat));
  for (int64_t b = 0; b < index->ntotal; b += kChunk) {
    ctx.ThrowIfCancelled();
    const int64_t e = std::min<int64_t>(index->ntotal, b + kChunk);
    at::Tensor part = buf.slice(0, 0, e - b);
    try {
      index->reconstruct_n(b, e - b, part.data_ptr<float>());
    } catch (const faiss::FaissException& ex) {
      GR_FAIL(kUnsupported, faiss_file, ": FAISS cannot reconstruct the vectors of a ", result.type, ": ", ex.msg);
    }
    writer.Append(part, RunContext(), ids.slice(0, b, e));
    ctx.Progress(e, index->ntotal, "import");
  }
  writer.Finish();
  return result;
}

std::vector<int64_t> ExportFaissIndex(const std::string& index_dir, const std::string& faiss_file,
                                      const RunContext& ctx) {
  std::shared_ptr<DenseIndex> source = DenseIndex::Open(index_dir);
  const int64_t n = source->size(), d = source->dim();
  faiss::IndexFlatIP flat(d);
  std::vector<float> buf(static_cast<size_t>(std::min<int64_t>(n, kChunk) * d));
  for (int64_t b = 0; b < n; b += kChunk) {
    ctx.ThrowIfCancelled();
    const int64_t e = std::min(n, b + kChunk);
    source->CopyRowsFloat(b, e, buf.data());
    flat.add(e - b, buf.data());
    ctx.Progress(e, n, "export");
  }
  const std::string tmp = faiss_file + ".tmp-" + std::to_string(::getpid());
  try {
    faiss::write_index(&flat, tmp.c_str());
  } catch (const faiss::FaissException& e) {
    std::remove(tmp.c_str());
    GR_FAIL(kIo, "cannot write ", faiss_file, ": ", e.msg);
  }
  if (std::rename(tmp.c_str(), faiss_file.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    GR_FAIL(kIo, "cannot write ", faiss_file, ": ", std::strerror(err));
  }
  return source->ids();
}

#endif

}  // namespace gainrag
