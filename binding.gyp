# gainrag builds with CMake only (CMakeLists.txt, driven by cmake-js from `npm install`).
# This file exists so that tools which call `node-gyp rebuild` directly end up in the same
# build instead of a second one that could diverge: its single target just runs the CMake
# build script. npm itself never calls node-gyp for this package, because package.json
# declares its own "install" script.
{
  "targets": [
    {
      "target_name": "gainrag_cmake",
      "type": "none",
      "actions": [
        {
          "action_name": "cmake_build",
          "inputs": ["CMakeLists.txt"],
          "outputs": ["build/Release/gainrag.node"],
          "action": ["node", "scripts/build-native.js", "--force"]
        }
      ]
    }
  ]
}
