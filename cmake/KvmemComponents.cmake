# kvmem_component(<name> [DEPS <component>...])
#
# Declares one component as its own library target kvmem_<name> (alias kvmem::<name>):
# STATIC when src/<name>.cpp exists, INTERFACE (header-only) otherwise. Tests and benchmarks
# of a component link only that component, so each part builds and is tested on its own and
# the dependency order written in CMakeLists.txt is enforced by the linker.
set(KVMEM_COMPONENT_TARGETS "" CACHE INTERNAL "")
set(KVMEM_COMPONENTS "" CACHE INTERNAL "")

function(kvmem_component name)
  cmake_parse_arguments(ARG "" "" "DEPS" ${ARGN})
  set(header ${PROJECT_SOURCE_DIR}/include/kvmem/${name}.hpp)
  if(NOT EXISTS ${header})
    return()  # not written yet
  endif()
  set(target kvmem_${name})
  set(dep_targets "")
  foreach(dep IN LISTS ARG_DEPS)
    if(TARGET kvmem_${dep})
      list(APPEND dep_targets kvmem_${dep})
    endif()
  endforeach()
  if(EXISTS ${PROJECT_SOURCE_DIR}/src/${name}.cpp)
    add_library(${target} STATIC ${PROJECT_SOURCE_DIR}/src/${name}.cpp)
    kvmem_warnings(${target})
    target_include_directories(${target} PUBLIC
      $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>
      $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
    target_link_libraries(${target} PUBLIC ${dep_targets} Threads::Threads)
    target_compile_features(${target} PUBLIC cxx_std_20)
    set_target_properties(${target} PROPERTIES POSITION_INDEPENDENT_CODE ON EXPORT_NAME ${name})
  else()
    add_library(${target} INTERFACE)
    target_include_directories(${target} INTERFACE
      $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>
      $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
    target_link_libraries(${target} INTERFACE ${dep_targets} Threads::Threads)
    target_compile_features(${target} INTERFACE cxx_std_20)
    set_target_properties(${target} PROPERTIES EXPORT_NAME ${name})
  endif()
  add_library(kvmem::${name} ALIAS ${target})
  set(KVMEM_COMPONENT_TARGETS ${KVMEM_COMPONENT_TARGETS} ${target} CACHE INTERNAL "")
  set(KVMEM_COMPONENTS ${KVMEM_COMPONENTS} ${name} CACHE INTERNAL "")
endfunction()

# The component a file stem belongs to: the longest component name that prefixes it.
function(kvmem_component_of stem out_var)
  set(best "")
  foreach(c IN LISTS KVMEM_COMPONENTS)
    string(FIND "${stem}" "${c}" pos)
    string(LENGTH "${c}" len)
    string(LENGTH "${best}" best_len)
    if(pos EQUAL 0 AND len GREATER best_len)
      set(best ${c})
    endif()
  endforeach()
  set(${out_var} ${best} PARENT_SCOPE)
endfunction()
