// minLSTM (charlm.cells.MinLSTM.step, MinCell.coefficients), columns [k_h | k_f | k_i] of xW;
// no hW: with f, i = sigmoid(k_f), sigmoid(k_i), z = i / (f + i) = sigmoid(s) for
//   s = log i - log f = softplus(-k_f) - softplus(-k_i)
//   h = sigmoid(-s) h + sigmoid(s) g(k_h)     g(k) = k + 1/2 for k >= 0, else sigmoid(k)
(xW, hW, h, c) => {
  const S = h.length;
  const softplus = (x) => Math.max(x, 0) + Math.log1p(Math.exp(-Math.abs(x)));
  for (let j = 0; j < S; j++) {
    const k = xW[j], s = softplus(-xW[S + j]) - softplus(-xW[2 * S + j]);
    h[j] = sigmoid(-s) * h[j] + sigmoid(s) * (k >= 0 ? k + 0.5 : sigmoid(k));
  }
}
