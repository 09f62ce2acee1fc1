# CPack pre-build script (cmake/Packaging.cmake): brings CPack's staging
# copy of the install tree to what Debian policy asks of a package, before
# the .deb is made from it: the copyright file and changelog.gz in
# /usr/share/doc/slidepipe (12.5, 12.7), man pages compressed with gzip -9n
# (12.1), ELF files stripped of debugging symbols and of the .comment and
# .note sections (10.1, as dh_strip does), permissions 0755 for folders
# and bin/, 0644 for the rest whatever the umask was (10.9, as
# dh_fixperms does).
if(NOT CPACK_GENERATOR STREQUAL "DEB")
  return() # package_source's tarball: the source as it is
endif()
set(root ${CPACK_TEMPORARY_INSTALL_DIRECTORY}/usr) # the DEB generator's prefix
if(NOT EXISTS ${root}/bin/slidepipe)
  message(FATAL_ERROR "prebuild.cmake: no ${root}/bin/slidepipe in the staging tree")
endif()
if(NOT EXISTS ${CPACK_SP_DEB_DOC}/copyright)
  message(FATAL_ERROR "prebuild.cmake: no copyright file: OpenSeadragon was "
          "not in viewer/node_modules when the tree was configured "
          "(viewer/install-assets.sh, then reconfigure)")
endif()
file(COPY ${CPACK_SP_DEB_DOC}/copyright ${CPACK_SP_DEB_DOC}/changelog.gz
     DESTINATION ${root}/share/doc/slidepipe
     FILE_PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)

file(GLOB pages ${root}/share/man/man*/*.[1-9])
foreach(p IN LISTS pages)
  execute_process(COMMAND gzip -9nf ${p} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "prebuild.cmake: gzip ${p} failed")
  endif()
endforeach()

file(GLOB bins ${root}/bin/*)
foreach(b IN LISTS bins)
  execute_process(COMMAND ${CPACK_SP_STRIP} --remove-section=.comment
                          --remove-section=.note --strip-unneeded ${b}
                  RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "prebuild.cmake: strip ${b} failed")
  endif()
endforeach()

file(GLOB_RECURSE paths LIST_DIRECTORIES true ${root}/*)
foreach(p IN LISTS paths ITEMS ${root})
  get_filename_component(dir ${p} DIRECTORY)
  if(IS_DIRECTORY ${p} OR dir STREQUAL "${root}/bin")
    file(CHMOD ${p} PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE
         GROUP_READ GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)
  else()
    file(CHMOD ${p} PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
  endif()
endforeach()
