# Reference values for ceusfusion.stats' clinical-statistics additions, computed by the R packages
# reviewers use: Hmisc::improveProb (NRI, IDI), rms::validate(lrm) (bootstrap optimism),
# rms::nomogram (points table), pmsampsize (Riley et al. sample size), metafor::rma (heterogeneity),
# pROC (per-stratum AUC and DeLong variance), and base R's pretty().
#
# Run (R 4.2.2; Debian bookworm: apt-get install r-base-core r-cran-hmisc r-cran-rms r-cran-metafor;
# pmsampsize 1.1.3 is not packaged and CRAN may be unreachable: its R/ files, from the CRAN mirror
# github.com/cran/pmsampsize at version 1.1.3, are sourced from PMSAMPSIZE_DIR):
#   PMSAMPSIZE_DIR=/path/to/pmsampsize/R Rscript reference_clinical.R [SHARED_REFERENCE_DIR] > reference_clinical.json
# The JSON convention is ../shared/stats-reference's: numbers written with %.17g (exact doubles),
# NA as null, NaN / Inf as the strings "NaN" / "Infinity" / "-Infinity"; an R error is recorded as
# {"error": message}. Every data set is generated here (seeded) and written into the JSON, so the
# Python tests need neither R nor CSV files; SHARED_REFERENCE_DIR (optional) adds improveProb on
# every pair of score columns of the shared reference CSVs.

suppressPackageStartupMessages({library(Hmisc); library(rms); library(pROC); library(metafor)})
args <- commandArgs(trailingOnly = TRUE)
shared_dir <- if (length(args) >= 1) args[1] else NA
for (f in list.files(Sys.getenv("PMSAMPSIZE_DIR"), pattern = "[.]R$", full.names = TRUE)) source(f)

# ----------------------------------------------------------------------------- a small exact JSON writer
arr <- function(x) structure(as.list(x), class = "jsonarray")  # force an array, even of length 1
num <- function(x) {
  if (is.na(x) && !is.nan(x)) return("null")
  if (is.nan(x)) return("\"NaN\"")
  if (is.infinite(x)) return(if (x > 0) "\"Infinity\"" else "\"-Infinity\"")
  sprintf("%.17g", x)
}
esc <- function(s) paste0("\"", gsub("\n", "\\\\n", gsub("\"", "\\\\\"", gsub("\\\\", "\\\\\\\\", s))), "\"")
json <- function(x) {
  if (is.null(x)) return("null")
  if (inherits(x, "jsonarray")) return(paste0("[", paste(vapply(x, json, ""), collapse = ","), "]"))
  if (is.list(x)) {
    if (length(names(x))) return(paste0("{", paste(esc(names(x)), vapply(x, json, ""), sep = ":", collapse = ","), "}"))
    return(paste0("[", paste(vapply(x, json, ""), collapse = ","), "]"))
  }
  if (length(x) != 1) return(json(arr(x)))
  if (is.logical(x)) return(if (is.na(x)) "null" else if (x) "true" else "false")
  if (is.character(x) || is.factor(x)) return(esc(as.character(x)))
  if (is.integer(x) && !is.na(x)) return(as.character(x))
  num(as.numeric(x))
}
try_block <- function(expr) tryCatch(expr, error = function(e) list(error = conditionMessage(e)))

# ----------------------------------------------------------------------------- reclassification
improve <- function(y, x1, x2) {
  r <- improveProb(x1, x2, y)
  z <- function(m, se) 2 * pnorm(-abs(m / se))  # print.improveProb's 2P
  list(n = r$n, na = r$na, nb = r$nb, pup.ev = r$pup.ev, pup.ne = r$pup.ne, pdown.ev = r$pdown.ev,
       pdown.ne = r$pdown.ne, nri = r$nri, se.nri = r$se.nri, z.nri = r$z.nri, p.nri = z(r$nri, r$se.nri),
       nri.ev = r$nri.ev, se.nri.ev = r$se.nri.ev, z.nri.ev = r$z.nri.ev, p.nri.ev = z(r$nri.ev, r$se.nri.ev),
       nri.ne = r$nri.ne, se.nri.ne = r$se.nri.ne, z.nri.ne = r$z.nri.ne, p.nri.ne = z(r$nri.ne, r$se.nri.ne),
       improveSens = r$improveSens, improveSpec = r$improveSpec,
       idi = r$idi, se.idi = r$se.idi, z.idi = r$z.idi, p.idi = z(r$idi, r$se.idi))
}
categorical <- function(y, x1, x2, cuts, left.open = FALSE) {  # category = #(cuts <= p) (left.open: #(cuts < p)), scaled to [0, 1]
  k <- length(cuts)
  improve(y, findInterval(x1, cuts, left.open = left.open) / k, findInterval(x2, cuts, left.open = left.open) / k)
}
reclass_case <- function(name, y, x1, x2, cutsets = list(c(0.1, 0.2, 0.3), 0.15, c(0.05, 0.1, 0.2, 0.4))) {
  list(name = name, y = arr(y), x1 = arr(x1), x2 = arr(x2),
       continuous = try_block(improve(y, x1, x2)),
       categorical = lapply(cutsets, function(cc) list(cuts = arr(cc), result = try_block(categorical(y, x1, x2, cc)),
                                                       result_right = try_block(categorical(y, x1, x2, cc, left.open = TRUE)))))
}
rand_pair <- function(n, prev, strength, rho, digits = NA) {
  y <- rbinom(n, 1, prev)
  s <- strength * (y - prev) + rnorm(n)
  x1 <- plogis(qlogis(prev) + s + rnorm(n, sd = 0.5))
  x2 <- plogis(qlogis(prev) + rho * s + rnorm(n, sd = 0.5) + 0.3 * (y - prev))
  if (!is.na(digits)) { x1 <- round(x1, digits); x2 <- round(x2, digits) }
  list(y = y, x1 = x1, x2 = x2)
}
set.seed(20240601)
reclass <- list()
grid <- expand.grid(n = c(12, 40, 120, 396, 800), prev = c(0.1, 0.3, 0.5), digits = c(NA, 2, 1))
for (i in seq_len(nrow(grid))) {
  g <- grid[i, ]
  d <- rand_pair(g$n, g$prev, runif(1, 0.2, 2.5), runif(1, 0.3, 1.2), g$digits)
  if (length(unique(d$y)) < 2) d$y[1:2] <- c(0, 1)
  reclass[[length(reclass) + 1]] <- reclass_case(sprintf("random_n%d_prev%.1f_digits%s", g$n, g$prev, g$digits), d$y, d$x1, d$x2)
}
y <- c(0, 0, 0, 1, 1, 0, 1, 0, 0, 1)
p <- c(.1, .2, .3, .4, .5, .15, .35, .05, .25, .45)
reclass[[length(reclass) + 1]] <- reclass_case("identical", y, p, p)
reclass[[length(reclass) + 1]] <- reclass_case("all_events_up_nonevents_down", y, p, ifelse(y == 1, p + 0.3, p - 0.04))
reclass[[length(reclass) + 1]] <- reclass_case("constant_old", y, rep(0.3, 10), p)
reclass[[length(reclass) + 1]] <- reclass_case("constant_both", y, rep(0.3, 10), rep(0.3, 10))
reclass[[length(reclass) + 1]] <- reclass_case("perfect_new", y, p, ifelse(y == 1, 0.9, 0.05))
reclass[[length(reclass) + 1]] <- reclass_case("hard_0_1", y, ifelse(y == 1, 1, 0), rev(ifelse(y == 1, 1, 0)))
reclass[[length(reclass) + 1]] <- reclass_case("one_positive", c(1, rep(0, 9)), p, rev(p))
reclass[[length(reclass) + 1]] <- reclass_case("one_negative", c(0, rep(1, 9)), p, rev(p))
reclass[[length(reclass) + 1]] <- reclass_case("tiny_n4", c(0, 1, 0, 1), c(.2, .4, .6, .8), c(.3, .3, .5, .9))
reclass[[length(reclass) + 1]] <- reclass_case("tiny_n2", c(0, 1), c(.2, .4), c(.1, .5))
reclass[[length(reclass) + 1]] <- reclass_case("on_the_cuts", y, c(.1, .2, .3, .1, .2, .3, .15, .05, .4, .3), c(.2, .1, .3, .3, .1, .2, .15, .1, .3, .4))
reclass[[length(reclass) + 1]] <- reclass_case("single_class", rep(0, 10), p, rev(p))
reclass[[length(reclass) + 1]] <- reclass_case("out_of_range", y, p * 2.5, p)

shared <- list()
if (!is.na(shared_dir)) for (f in sort(list.files(shared_dir, pattern = "[.]csv$", full.names = TRUE))) {
  d <- read.csv(f)
  sets <- if ("set" %in% names(d)) c("all", "train", "test") else "all"
  cols <- setdiff(names(d), c("y", "set"))
  for (s in sets) {
    dd <- if (s == "all") d else d[d$set == s, ]
    for (i in seq_along(cols)) for (j in seq_along(cols)) if (i < j) {
      shared[[length(shared) + 1]] <- list(file = basename(f), group = s, x1 = cols[i], x2 = cols[j],
                                           continuous = try_block(improve(dd$y, dd[[cols[i]]], dd[[cols[j]]])),
                                           categorical_0.1_0.2_0.3 = try_block(categorical(dd$y, dd[[cols[i]]], dd[[cols[j]]], c(.1, .2, .3))))
    }
  }
}

# ----------------------------------------------------------------------------- rms::validate(lrm), B = 2000
validate_case <- function(name, n, beta, prev_shift, B = 2000) {
  p <- length(beta)
  X <- matrix(rnorm(n * p), n, p, dimnames = list(NULL, paste0("x", 1:p)))
  X[, p] <- round(X[, p] > 0.3)  # one binary predictor
  y <- rbinom(n, 1, plogis(prev_shift + X %*% beta))
  d <- data.frame(y = y, X)
  f <- lrm(y ~ ., data = d, x = TRUE, y = TRUE)
  v <- validate(f, B = B)
  tab <- lapply(rownames(v), function(r) as.list(setNames(as.numeric(v[r, ]), colnames(v))))
  names(tab) <- rownames(v)
  list(name = name, B = B, X = lapply(seq_len(p), function(j) arr(X[, j])), y = arr(y),
       stats = as.list(f$stats[c("Obs", "Model L.R.", "C", "Dxy", "R2", "Brier", "g", "gp")]), validate = tab)
}
set.seed(7)
validation <- list(validate_case("v_n200_p3", 200, c(0.8, 0.3, 0.5), -1),
                   validate_case("v_n120_p5", 120, c(0.5, -0.4, 0.3, 0, 0.6), -0.8),
                   validate_case("v_n400_p2", 400, c(1.2, 0.7), -1.4),
                   validate_case("v_n80_p4_weak", 80, c(0.2, 0.1, 0, 0.3), -0.5))

# ----------------------------------------------------------------------------- rms::nomogram
nomo_case <- function(name, d, fun.at = NULL) {
  dd <- datadist(d); assign("dd", dd, envir = .GlobalEnv); options(datadist = "dd")
  f <- lrm(y ~ ., data = d, eps = 1e-12, maxit = 100)
  nm <- if (is.null(fun.at)) nomogram(f, fun = plogis) else nomogram(f, fun = plogis, fun.at = fun.at)
  info <- attr(nm, "info")
  vars <- setdiff(names(nm), c("total.points", "lp", "Predicted Value"))
  list(name = name, data = lapply(d, function(x) if (is.numeric(x)) arr(x) else arr(as.character(x))),
       fun_at = if (is.null(fun.at)) NULL else arr(fun.at),
       coefficients = as.list(coef(f)),
       axes = lapply(vars, function(v) list(name = v, values = arr(if (is.numeric(nm[[v]][[v]])) nm[[v]][[v]] else as.character(nm[[v]][[v]])),
                                            points = arr(nm[[v]]$points), Xbeta = arr(nm[[v]]$Xbeta))),
       total_points = arr(nm$total.points$x), lp_points = arr(nm$lp$x), lp_at = arr(nm$lp$x.real),
       fun_points = arr(nm[["Predicted Value"]]$x), fun_at_out = arr(nm[["Predicted Value"]]$x.real),
       sc = info$sc, Intercept = info$Intercept)
}
set.seed(11)
n <- 300
age <- round(rnorm(n, 45, 12)); size <- round(rlnorm(n, 2.3, 0.4), 1)
sex <- factor(sample(c("F", "M"), n, TRUE, c(0.7, 0.3))); margin <- factor(sample(c("smooth", "irregular", "lobulated"), n, TRUE))
grade <- sample(1:5, n, TRUE); dl <- rnorm(n)
lin <- -1.2 + 0.9 * dl + 0.03 * (age - 45) - 0.5 * (sex == "M") + 0.08 * (size - 10) + 0.4 * (margin == "irregular") + 0.15 * grade
y <- rbinom(n, 1, plogis(lin))
nomograms <- list(
  nomo_case("dl_only", data.frame(y = y, DL_score = dl)),
  nomo_case("dl_clinical", data.frame(y = y, DL_score = dl, age = age, sex = sex, size = size, margin = margin, grade = grade),
            fun.at = c(0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)),
  nomo_case("dl_clinical_default_fun", data.frame(y = y, DL_score = dl, age = age, sex = sex)),
  nomo_case("negative_coefficient", data.frame(y = y, DL_score = -dl * 3 + 1, size = size), fun.at = c(0.1, 0.25, 0.5, 0.75)))

# ----------------------------------------------------------------------------- pmsampsize (binary)
pms <- function(...) try_block({
  r <- pmsampsize(type = "b", ...)
  tab <- lapply(rownames(r$results_table), function(k) as.list(r$results_table[k, ]))
  names(tab) <- rownames(r$results_table)
  list(sample_size = r$sample_size, events = r$events, EPP = r$EPP, final_shrinkage = r$final_shrinkage,
       rsquared = r$rsquared, max_r2a = r$max_r2a, nag_r2 = r$nag_r2, results_table = tab)
})
samplesize <- list(
  list(args = list(csrsquared = 0.288, parameters = 24, prevalence = 0.174), paper = "Riley et al. 2019 (Chagas); pmsampsize test 4.1"),
  list(args = list(csrsquared = 0.55, parameters = 24, prevalence = 0.174), paper = "pmsampsize test 4.2"),
  list(args = list(csrsquared = 0.288, parameters = 36, prevalence = 0.174), paper = "pmsampsize test 4.3"),
  list(args = list(csrsquared = 0.288, parameters = 24, prevalence = 0.25), paper = "pmsampsize test 4.4"),
  list(args = list(cstatistic = 0.89, parameters = 24, prevalence = 0.174), paper = "pmsampsize help example (C-statistic)"),
  list(args = list(cstatistic = 0.81, parameters = 30, prevalence = 0.2)),
  list(args = list(cstatistic = 0.7, parameters = 10, prevalence = 0.2)),
  list(args = list(nagrsquared = 0.15, parameters = 20, prevalence = 0.2)),
  list(args = list(nagrsquared = 0.4, parameters = 8, prevalence = 0.07)),
  list(args = list(csrsquared = 0.95, parameters = 10, prevalence = 0.2), paper = "error: shrinkage < R2"),
  list(args = list(csrsquared = 0.6, parameters = 10, prevalence = 0.05), paper = "error: R2 above the maximum"))
set.seed(3)
for (i in 1:40) {
  prev <- round(runif(1, 0.03, 0.6), 3)
  mx <- 1 - exp(2 * (prev * log(prev) + (1 - prev) * log(1 - prev)))
  samplesize[[length(samplesize) + 1]] <- list(args = list(csrsquared = round(runif(1, 0.01, 0.95 * mx), 3),
                                                           parameters = sample(1:80, 1), prevalence = prev,
                                                           shrinkage = sample(c(0.9, 0.9, 0.85, 0.95), 1)))
}
for (s in seq_along(samplesize)) samplesize[[s]]$result <- do.call(pms, samplesize[[s]]$args)

# ----------------------------------------------------------------------------- per-centre AUC + heterogeneity
het_case <- function(name, y, score, strata) {
  out <- list()
  for (s in sort(unique(as.character(strata)))) {
    m <- as.character(strata) == s
    r <- try_block({
      rc <- roc(y[m], score[m], levels = c(0, 1), direction = "<", quiet = TRUE)
      list(auc = as.numeric(auc(rc)), var = var(rc, method = "delong"))
    })
    out[[s]] <- c(list(n = sum(m), n_pos = sum(y[m])), r)
  }
  ok <- Filter(function(r) is.null(r$error) && !is.na(r$var) && r$var > 0, out)
  het <- if (length(ok) >= 2) {
    yi <- vapply(ok, function(r) r$auc, 0); vi <- vapply(ok, function(r) r$var, 0)
    fe <- rma(yi = yi, vi = vi, method = "FE"); dl <- rma(yi = yi, vi = vi, method = "DL")
    list(QE = fe$QE, QEp = fe$QEp, df = length(yi) - 1L, estimate_fe = as.numeric(fe$beta), se_fe = fe$se,
         tau2 = dl$tau2, I2 = dl$I2, estimate_re = as.numeric(dl$beta), se_re = dl$se, strata = arr(names(ok)))
  } else NULL
  list(name = name, y = arr(y), score = arr(score), strata = arr(as.character(strata)), per_stratum = out, heterogeneity = het)
}
set.seed(5)
centres <- list()
for (k in c(2, 3, 5)) for (rep in 1:2) {
  n <- sample(c(150, 400), 1)
  st <- sample(paste0("centre_", LETTERS[1:k]), n, TRUE)
  y <- rbinom(n, 1, 0.25)
  eff <- setNames(runif(k, 0.2, 2), paste0("centre_", LETTERS[1:k]))
  score <- plogis(eff[st] * (y - 0.25) + rnorm(n))
  centres[[length(centres) + 1]] <- het_case(sprintf("k%d_rep%d", k, rep), y, round(score, c(17, 2)[rep]), st)
}
st <- rep(c("A", "B", "C"), each = 20); y <- rep(c(0, 1), 30); sc <- runif(60)
sc[st == "B"] <- ifelse(y[st == "B"] == 1, 0.9, 0.1)  # perfect separation in B: zero variance, left out
y2 <- y; y2[st == "C"] <- 0  # C has no positives
centres[[length(centres) + 1]] <- het_case("degenerate_strata", y2, sc, st)

# ----------------------------------------------------------------------------- pretty()
set.seed(9)
pretty_cases <- list()
for (i in 1:200) {
  lo <- rnorm(1, 0, 10^sample(-3:4, 1)); hi <- lo + abs(rnorm(1, 0, 10^sample(-4:4, 1)))
  if (i %% 17 == 0) hi <- lo
  for (nn in c(5, 10)) pretty_cases[[length(pretty_cases) + 1]] <- list(lo = lo, hi = hi, n = nn, pretty = arr(pretty(c(lo, hi), n = nn)))
}
for (r in list(c(0, 100), c(0, 1), c(-3.2, 2.7), c(0.0123, 0.0987), c(17, 93), c(0, 0), c(5, 5), c(1e-9, 3e-9)))
  pretty_cases[[length(pretty_cases) + 1]] <- list(lo = r[1], hi = r[2], n = 10, pretty = arr(pretty(r, n = 10)))

out <- list(schema_version = 1L,
            generator = list(script = "reference_clinical.R", R = paste(R.version$major, R.version$minor, sep = "."),
                             Hmisc = as.character(packageVersion("Hmisc")), rms = as.character(packageVersion("rms")),
                             pROC = as.character(packageVersion("pROC")), metafor = as.character(packageVersion("metafor")),
                             pmsampsize = "1.1.3 (R sources of the CRAN release)"),
            calls = list(reclassification = "Hmisc::improveProb(x1, x2, y); p = 2 * pnorm(-abs(z)) (print.improveProb); categorical: improveProb(findInterval(x1, cuts)/k, findInterval(x2, cuts)/k, y); result_right: findInterval(..., left.open = TRUE), i.e. cut(right = TRUE)",
                         validation = "rms::validate(lrm(y ~ ., x = TRUE, y = TRUE), B = 2000) (set.seed(7) before the data sets)",
                         nomogram = "rms::nomogram(lrm(y ~ ., eps = 1e-12, maxit = 100), fun = plogis[, fun.at]) with datadist(d)",
                         samplesize = "pmsampsize(type = 'b', ...)",
                         centres = "pROC auc/var(method = 'delong') per stratum; metafor::rma(yi, vi, method = 'FE') QE/QEp, method = 'DL' tau2/I2",
                         pretty = "pretty(c(lo, hi), n)"),
            reclassification = reclass, reclassification_shared = shared, validation = validation, nomograms = nomograms,
            samplesize = samplesize, centres = centres, pretty = pretty_cases)
cat(json(out), "\n")
