# Warning flags for kvmem's own targets (not for consumers). -Werror is opt-in through
# KVMEM_WERROR, which every CMake preset turns on, so CI keeps warnings at zero.
set(KVMEM_WARNING_FLAGS
  -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Woverloaded-virtual
  -Wcast-align -Wnull-dereference -Wimplicit-fallthrough)
if(KVMEM_WERROR)
  list(APPEND KVMEM_WARNING_FLAGS -Werror)
endif()

function(kvmem_warnings target)
  target_compile_options(${target} PRIVATE ${KVMEM_WARNING_FLAGS})
endfunction()
