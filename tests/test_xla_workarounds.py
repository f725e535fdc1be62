"""XLA flags for compiler defects of supported JAX versions: which versions get which flag."""

from declip_jax import xla_workarounds


def test_triton_gemm_is_turned_off_for_jaxlib_0_10_only_and_never_over_a_users_setting():
  off = xla_workarounds.TRITON_GEMM_OFF
  assert xla_workarounds.flags_for((0, 10, 2), "") == off
  assert xla_workarounds.flags_for((0, 10, 2), "--xla_force_host_platform_device_count=8") == (
      f"--xla_force_host_platform_device_count=8 {off}")
  assert xla_workarounds.flags_for((0, 11, 2), "") == ""
  assert xla_workarounds.flags_for((0, 12, 0), "--a=1") == "--a=1"
  assert xla_workarounds.flags_for((0, 10, 2), "--xla_gpu_enable_triton_gemm=true") == (
      "--xla_gpu_enable_triton_gemm=true")
  assert xla_workarounds.flags_for((), "") == ""  # No jaxlib installed.


def test_importing_the_package_applied_them():
  import os  # pylint: disable=g-import-not-at-top
  expected = xla_workarounds.flags_for(xla_workarounds.installed_version("jaxlib"), "")
  assert expected in os.environ.get("XLA_FLAGS", "")
