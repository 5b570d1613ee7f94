// Expressions and stateless operators — see Expression.swift.
