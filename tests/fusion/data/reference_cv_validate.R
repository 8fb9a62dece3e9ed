# rms::validate(lrm, method = "crossvalidation") with the held-out groups it drew, for
# ceusfusion.stats.optimism.cv_validate (tests/fusion/test_nested.py).
# Run: Rscript tests/fusion/data/reference_cv_validate.R > tests/fusion/data/reference_cv_validate.json
# (R 4.2.2, rms 6.5-0, Debian bookworm: apt-get install r-base-core r-cran-rms)
suppressMessages(library(rms))
arr <- function(x) as.numeric(x)
cv_case <- function(name, n, beta, shift, B, seed) {
  p <- length(beta)
  X <- matrix(rnorm(n * p), n, p, dimnames = list(NULL, paste0("x", 1:p)))
  y <- rbinom(n, 1, plogis(shift + X %*% beta))
  d <- data.frame(y = y, X)
  f <- lrm(y ~ ., data = d, x = TRUE, y = TRUE)
  # predab.resample: sb <- sample(n); group i holds sb[is:ie], is = 1 + round((i - 1) n/B), ie = round(is + n/B - 1)
  set.seed(seed); sb <- sample(n, replace = FALSE)
  per <- n / B
  groups <- lapply(1:B, function(i) { is <- 1 + round((i - 1) * per); ie <- min(n, round(is + per - 1)); sb[is:ie] - 1 })
  set.seed(seed); v <- validate(f, method = "crossvalidation", B = B)
  tab <- lapply(rownames(v), function(r) as.list(setNames(as.numeric(v[r, ]), colnames(v))))
  names(tab) <- rownames(v)
  list(name = name, B = B, X = lapply(seq_len(p), function(j) arr(X[, j])), y = arr(y),
       test_groups = lapply(groups, arr), validate = tab)
}
set.seed(11)
cases <- list(cv_case("cv_n200_p3_k10", 200, c(0.8, 0.3, 0.5), -1, 10, 1),
              cv_case("cv_n120_p5_k5", 120, c(0.5, -0.4, 0.3, 0, 0.6), -0.8, 5, 2),
              cv_case("cv_n90_p4_k3_weak", 90, c(0.2, 0.1, 0, 0.3), -0.5, 3, 3))
cat(jsonlite::toJSON(list(R = R.version.string, rms = as.character(packageVersion("rms")),
                          reference = "rms::validate(lrm(y ~ ., x = TRUE, y = TRUE), method = 'crossvalidation', B)",
                          cases = cases), auto_unbox = TRUE, digits = NA))
