{
  "targets": [
    {
      "target_name": "tnl_cpu",
      "sources": [
        "<!@(node -p \"require('fs').readdirSync('native').filter(f => f.endsWith('.cc')).sort().map(f => 'native/' + f).join(' ')\")"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "native"
      ],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions", "-O2"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17", "-std=gnu++1y", "-std=gnu++20", "-O2"],
      "cflags": ["-O3", "-march=x86-64-v2", "-mtune=generic", "-fno-math-errno", "-pthread", "-fvisibility=hidden"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-frtti", "-O3", "-march=x86-64-v2", "-fno-math-errno", "-pthread",
                    "-fvisibility=hidden", "-Wno-uninitialized", "-Wno-maybe-uninitialized", "-Wno-unused-parameter"],
      "ldflags": ["-pthread", "-ldl"],
      "libraries": ["-ldl"],
      "conditions": [
        ["target_arch != 'x64'", {
          "cflags!": ["-march=x86-64-v2"],
          "cflags_cc!": ["-march=x86-64-v2"]
        }]
      ]
    }
  ]
}
