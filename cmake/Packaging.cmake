# The Debian package, slidepipe_<version>_amd64.deb:
#   scripts/package.sh                       (Release build in build-release/)
#   cmake --build build --target package     (any build tree)
# It holds what the install rules install, under /usr, plus the two files
# Debian requires of every package (/usr/share/doc/slidepipe/copyright and
# changelog.gz, generated here into deb-doc/ of the build tree).
# Depends is computed by dpkg-shlibdeps from the shared libraries the
# binaries link.

set(SP_DEB_MAINTAINER "slidepipe developers <dev@slidepipe.invalid>"
    CACHE STRING "Maintainer field of the Debian package")

# ---- copyright and changelog.gz (Debian policy 12.5, 12.7) ----
set(_sp_deb_doc ${PROJECT_BINARY_DIR}/deb-doc)
set(_sp_osd_license
    ${PROJECT_SOURCE_DIR}/viewer/node_modules/openseadragon/LICENSE.txt)
if(EXISTS ${_sp_osd_license})
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS
               ${_sp_osd_license})
  file(STRINGS ${_sp_osd_license} _sp_lines)
  set(SP_OSD_COPYRIGHT "")
  set(SP_OSD_LICENSE "")
  foreach(_l IN LISTS _sp_lines)
    if(_l MATCHES "^Copyright \\(C\\) (.*)$")
      if(SP_OSD_COPYRIGHT)
        string(APPEND SP_OSD_COPYRIGHT "\n ")
      endif()
      string(APPEND SP_OSD_COPYRIGHT "${CMAKE_MATCH_1}")
    elseif(_l STREQUAL "")
      string(APPEND SP_OSD_LICENSE " .\n")
    else()
      string(APPEND SP_OSD_LICENSE " ${_l}\n")
    endif()
  endforeach()
  # the text, each line indented, an empty line " ." (copyright-format 1.0)
  string(REGEX REPLACE "^( \\.\n)+" "" SP_OSD_LICENSE "${SP_OSD_LICENSE}")
  string(REGEX REPLACE "\n$" "" SP_OSD_LICENSE "${SP_OSD_LICENSE}")
  configure_file(${CMAKE_CURRENT_LIST_DIR}/deb/copyright.in
                 ${_sp_deb_doc}/copyright @ONLY)
else()
  message(STATUS "Packaging: no OpenSeadragon in viewer/node_modules "
                 "(viewer/install-assets.sh): no .deb from this tree")
endif()
string(TIMESTAMP SP_DEB_DATE "%a, %d %b %Y %H:%M:%S +0000" UTC)
configure_file(${CMAKE_CURRENT_LIST_DIR}/deb/changelog.in
               ${PROJECT_BINARY_DIR}/deb-changelog @ONLY)
file(MAKE_DIRECTORY ${_sp_deb_doc})
execute_process(COMMAND gzip -9n -c ${PROJECT_BINARY_DIR}/deb-changelog
                OUTPUT_FILE ${_sp_deb_doc}/changelog.gz)

# ---- CPack ----
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME slidepipe)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
# what Debian asks of the installed files, done on CPack's staging copy
# (so `cmake --install` stays as it is): copyright and changelog, man
# pages compressed, binaries stripped as dh_strip does
set(CPACK_PRE_BUILD_SCRIPTS ${CMAKE_CURRENT_LIST_DIR}/deb/prebuild.cmake)
set(CPACK_SP_DEB_DOC ${_sp_deb_doc})
set(CPACK_SP_STRIP ${CMAKE_STRIP})
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${SP_DEB_MAINTAINER}")
set(CPACK_DEBIAN_PACKAGE_SECTION science)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "whole-slide image pipeline: tile pyramids, tissue features, viewer")
# the extended description (CPack indents it and marks the empty line)
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION
    "slidepipe reads digital-pathology whole-slide images with OpenSlide and,
on every core, builds Deep Zoom or pyramidal TIFF tile pyramids and
computes per-tile tissue features (colour, stain optical density, blur,
pen marks) into HDF5 files.

It also queries and indexes those files across a cohort, runs resumable
batches over folders of slides, and serves slides, pyramids and feature
heatmaps to a browser (OpenSeadragon, included) from a local web server.")
# package_source: the tracked files, not builds, assets or git
set(CPACK_SOURCE_GENERATOR TGZ)
set(CPACK_SOURCE_IGNORE_FILES "/\\\\.git/" "/\\\\.git$" "/build[^/]*/" "/node_modules/"
    "/demo-out/" "/out/" "/fuzz/corpus/" "/fuzz/artifacts/")
include(CPack)
