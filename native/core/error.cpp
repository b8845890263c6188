#include "core/error.h"

namespace gainrag {

const char* ErrorCodeName(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument: return "E_INVALID_ARG";
    case ErrorCode::kSafetensors: return "E_SAFETENSORS";
    case ErrorCode::kModelConfig: return "E_MODEL_CONFIG";
    case ErrorCode::kShape: return "E_SHAPE";
    case ErrorCode::kOutOfMemory: return "E_OOM";
    case ErrorCode::kCancelled: return "E_CANCELLED";
    case ErrorCode::kIo: return "E_IO";
    case ErrorCode::kIndex: return "E_INDEX";
    case ErrorCode::kData: return "E_DATA";
    case ErrorCode::kUnsupported: return "E_UNSUPPORTED";
    case ErrorCode::kInternal: return "E_INTERNAL";
  }
  return "E_INTERNAL";
}

}  // namespace gainrag
