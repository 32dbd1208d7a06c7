-- ARGV: 2 now µs, 3 cap
return promote(ARGV[2], tonumber(ARGV[3]))
