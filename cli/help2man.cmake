# Generate the man pages from `slidepipe --help` (cmake -P; called by
# cli/CMakeLists.txt): SP_MAN_DIR/slidepipe.1, and slidepipe-CMD.1 for each
# command listed under "Commands:", from `slidepipe CMD --help`.
#   -DSP_BIN=... -DSP_HELP2MAN=... -DSP_MAN_DIR=... -DSP_VERSION=...
file(REMOVE_RECURSE ${SP_MAN_DIR})
file(MAKE_DIRECTORY ${SP_MAN_DIR}/bin)
execute_process(COMMAND ${SP_BIN} --help OUTPUT_VARIABLE help
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0 OR NOT help MATCHES "\nCommands:\n")
  message(FATAL_ERROR "${SP_BIN} --help failed or lists no commands")
endif()
string(REGEX REPLACE ".*\nCommands:\n" "" cmds "${help}")
string(REGEX REPLACE "\n\n.*" "" cmds "${cmds}")
string(REPLACE "\n" ";" cmds "${cmds}")

# help2man names a page after the program it runs, and takes "Usage:" and
# "or:" lines (case-sensitive) for the SYNOPSIS: a wrapper script called
# slidepipe-CMD (as git-commit.1) runs `slidepipe CMD` and capitalises the
# usage lines of our --help.
function(wrapper name args)
  set(w ${SP_MAN_DIR}/bin/${name})
  file(WRITE ${w} "#!/bin/sh\n'${SP_BIN}' ${args} \"$@\" | sed -e '1s/^usage:/Usage:/' -e '2,3s/^       slidepipe /   or: slidepipe /'\n")
  file(CHMOD ${w} PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE)
endfunction()

set(see_also "")
foreach(line IN LISTS cmds)
  if(NOT line MATCHES "^  ([a-z]+) +(.*)$")
    message(FATAL_ERROR "unexpected line under Commands: '${line}'")
  endif()
  set(cmd ${CMAKE_MATCH_1})
  set(summary ${CMAKE_MATCH_2})
  # (the wrapper's pipe hides the exit status: check it here)
  execute_process(COMMAND ${SP_BIN} ${cmd} --help OUTPUT_QUIET
                  RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "'slidepipe ${cmd} --help' failed")
  endif()
  wrapper(slidepipe-${cmd} ${cmd})
  file(WRITE ${SP_MAN_DIR}/bin/${cmd}.h2m
       "[see also]\n.BR slidepipe (1)\n")
  execute_process(
    COMMAND ${SP_HELP2MAN} --no-info --section=1
            --version-string=${SP_VERSION} --name=${summary}
            --include=${SP_MAN_DIR}/bin/${cmd}.h2m
            --output=${SP_MAN_DIR}/slidepipe-${cmd}.1
            ${SP_MAN_DIR}/bin/slidepipe-${cmd}
    RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "help2man failed on 'slidepipe ${cmd} --help'")
  endif()
  if(see_also)
    string(APPEND see_also ",\n")
  endif()
  string(APPEND see_also ".BR slidepipe-${cmd} (1)")
endforeach()

wrapper(slidepipe "")
file(WRITE ${SP_MAN_DIR}/bin/slidepipe.h2m "[see also]\n${see_also}\n")
execute_process(
  COMMAND ${SP_HELP2MAN} --no-info --section=1 --version-string=${SP_VERSION}
          "--name=whole-slide image pipeline: pyramids, tissue features, HDF5"
          --include=${SP_MAN_DIR}/bin/slidepipe.h2m
          --output=${SP_MAN_DIR}/slidepipe.1 ${SP_MAN_DIR}/bin/slidepipe
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "help2man failed on 'slidepipe --help'")
endif()
file(REMOVE_RECURSE ${SP_MAN_DIR}/bin)
