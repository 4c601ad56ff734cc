//! The little dense linear algebra the fits need: Cholesky factorisation of a symmetric positive
//! definite matrix, solves and inverses. Matrices here are at most a few hundred rows (one per model),
//! so a plain row-major implementation is faster than pulling in a linear algebra crate.

/// A square matrix stored row-major.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Matrix {
    pub(crate) n: usize,
    pub(crate) data: Vec<f64>,
}

impl Matrix {
    pub(crate) fn zeros(n: usize) -> Matrix {
        Matrix {
            n,
            data: vec![0.0; n * n],
        }
    }

    #[inline]
    pub(crate) fn get(&self, row: usize, column: usize) -> f64 {
        self.data[row * self.n + column]
    }

    #[inline]
    pub(crate) fn add(&mut self, row: usize, column: usize, value: f64) {
        self.data[row * self.n + column] += value;
    }

    pub(crate) fn multiply(&self, other: &Matrix) -> Matrix {
        let n = self.n;
        let mut product = Matrix::zeros(n);
        for i in 0..n {
            for k in 0..n {
                let left = self.get(i, k);
                if left == 0.0 {
                    continue;
                }
                let other_row = &other.data[k * n..(k + 1) * n];
                let product_row = &mut product.data[i * n..(i + 1) * n];
                for (target, value) in product_row.iter_mut().zip(other_row) {
                    *target += left * value;
                }
            }
        }
        product
    }

    /// The quadratic form `cᵀ M c`.
    pub(crate) fn quadratic_form(&self, vector: &[f64]) -> f64 {
        let mut total = 0.0;
        for (i, &ci) in vector.iter().enumerate() {
            if ci == 0.0 {
                continue;
            }
            let row = &self.data[i * self.n..(i + 1) * self.n];
            let dot: f64 = row.iter().zip(vector).map(|(a, b)| a * b).sum();
            total += ci * dot;
        }
        total
    }
}

/// The lower-triangular Cholesky factor `L` of a symmetric positive definite matrix (`A = L Lᵀ`).
pub(crate) struct Cholesky {
    lower: Matrix,
}

impl Cholesky {
    /// Factorises `a`; returns `None` when it is not (numerically) positive definite.
    pub(crate) fn new(a: &Matrix) -> Option<Cholesky> {
        let n = a.n;
        let mut lower = Matrix::zeros(n);
        for j in 0..n {
            let row_j = &lower.data[j * n..j * n + j];
            let diagonal = a.get(j, j) - row_j.iter().map(|v| v * v).sum::<f64>();
            if diagonal.is_nan() || diagonal <= 0.0 {
                return None;
            }
            let diagonal = diagonal.sqrt();
            lower.data[j * n + j] = diagonal;
            for i in (j + 1)..n {
                let dot: f64 = (0..j)
                    .map(|k| lower.data[i * n + k] * lower.data[j * n + k])
                    .sum();
                lower.data[i * n + j] = (a.get(i, j) - dot) / diagonal;
            }
        }
        Some(Cholesky { lower })
    }

    /// Solves `A x = b`.
    pub(crate) fn solve(&self, b: &[f64]) -> Vec<f64> {
        let n = self.lower.n;
        let l = &self.lower.data;
        let mut y = b.to_vec();
        for i in 0..n {
            let dot: f64 = (0..i).map(|k| l[i * n + k] * y[k]).sum();
            y[i] = (y[i] - dot) / l[i * n + i];
        }
        for i in (0..n).rev() {
            let dot: f64 = ((i + 1)..n).map(|k| l[k * n + i] * y[k]).sum();
            y[i] = (y[i] - dot) / l[i * n + i];
        }
        y
    }

    /// `A⁻¹`, column by column.
    pub(crate) fn inverse(&self) -> Matrix {
        let n = self.lower.n;
        let mut inverse = Matrix::zeros(n);
        let mut unit = vec![0.0; n];
        for column in 0..n {
            unit.iter_mut().for_each(|v| *v = 0.0);
            unit[column] = 1.0;
            let solution = self.solve(&unit);
            for (row, value) in solution.into_iter().enumerate() {
                inverse.data[row * n + column] = value;
            }
        }
        inverse
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solves_and_inverts_a_small_system() {
        let a = Matrix {
            n: 3,
            data: vec![4.0, 2.0, 0.6, 2.0, 5.0, 1.0, 0.6, 1.0, 3.0],
        };
        let factor = Cholesky::new(&a).unwrap();
        let x = factor.solve(&[1.0, 2.0, 3.0]);
        for i in 0..3 {
            let row: f64 = (0..3).map(|k| a.get(i, k) * x[k]).sum();
            assert!((row - [1.0, 2.0, 3.0][i]).abs() < 1e-12);
        }
        let identity = a.multiply(&factor.inverse());
        for i in 0..3 {
            for j in 0..3 {
                let expected = if i == j { 1.0 } else { 0.0 };
                assert!((identity.get(i, j) - expected).abs() < 1e-12);
            }
        }
        assert!(Cholesky::new(&Matrix::zeros(2)).is_none());
    }
}
