-- upkit.version: versions compare as numbers, component by component.
local T = require "upkit.test"
local version = require "upkit.version"

T.test("3.17.14 < 2019.1.0 < 2021.1.8018 (numeric, not text)", function()
  T.eq(version.compare("3.17.14", "2019.1.0"), -1)
  T.eq(version.compare("2019.1.0", "2021.1.8018"), -1)
  T.eq(version.compare("2021.1.8018", "3.17.14"), 1)
  T.eq(version.compare("2019.1.10", "2019.1.9"), 1)
  T.eq(version.compare("2024.3.600", "2024.3.12712"), -1)
end)

T.test("missing components count as zero; a leading v is accepted", function()
  T.eq(version.compare("2019.1", "2019.1.0"), 0)
  T.eq(version.compare("v2023.4.8166", "2023.4.8166"), 0)
  T.eq(version.eq("2021.1", "2021.1.0.0"), true)
end)

T.test("a pre-release sorts before its release", function()
  T.eq(version.compare("2021.1.0-beta1", "2021.1.0"), -1)
  T.eq(version.compare("2021.1.0-beta2", "2021.1.0-beta10"), -1)
  T.eq(version.compare("2021.1.1-beta1", "2021.1.0"), 1)
end)

T.test("parse gives the numbers and the pre-release", function()
  local v = version.parse("2021.1.8018-beta2")
  T.eq({ v[1], v[2], v[3] }, { 2021, 1, 8018 })
  T.eq(v.pre, "beta2")
  T.eq(v.text, "2021.1.8018-beta2")
  T.eq(#version.parse("3.17.14"), 3)
end)

T.test("a string that is not a version raises EINVAL", function()
  T.raises("EINVAL", version.parse, "latest")
  T.raises("EINVAL", version.parse, "1..2")
  T.raises("EINVAL", version.parse, "")
  T.raises("EINVAL", version.compare, "1.0", nil)
end)

T.test("lt, le, ge, gt, sort and max", function()
  T.ok(version.lt("3.17.14", "2019.1.5"))
  T.ok(version.le("2019.1.5", "2019.1.5"))
  T.ok(version.ge("2025.4.10700", "2025.4.10666"))
  T.ok(version.gt("2024.4.7000", "2024.3.600"))
  local l = version.sort { "2023.4.8166", "3.17.14", "2021.1.7687", "2019.1.5", "2025.4.10700" }
  T.eq(l, { "3.17.14", "2019.1.5", "2021.1.7687", "2023.4.8166", "2025.4.10700" })
  T.eq(version.sort({ "3.2", "3.10", "3.9" }, true), { "3.10", "3.9", "3.2" })
  T.eq(version.max { "3.17.14", "2019.1.5", "2021.1.7687" }, "2021.1.7687")
end)

T.done()
