#include "core/error.h"

namespace gainrag {

const char* ErrorCodeName(ErrorCode code) {
  switch (code) {
#define GAINRAG_ERROR_NAME(name, text) \
  case ErrorCode::name:                \
    return text;
    GAINRAG_ERROR_CODES(GAINRAG_ERROR_NAME)
#undef GAINRAG_ERROR_NAME
  }
  return "E_INTERNAL";
}

}  // namespace gainrag
